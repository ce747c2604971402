"""ShardedEncoders.build honours the stage's parallel.encoders block (one gloo process): the encoder mesh's
shape, the ModalityBridge's chunk count and the blocks' activation recomputation, and refuses a shard size
that does not divide the encoder mesh at run time (the curriculum cannot know torchrun's world size)."""

from pathlib import Path

import pytest
from torch.distributed._composable.contract import _get_registry

from components.specs.curriculum import CurriculumSpec, StageSpec
from components.training.data_parallel import plan_data_parallel
from components.training.encoder_sharding import ShardedEncoders
from components.training.stage_runner import apply_freezing
from model.config import get_preset
from model.omni import OmniModel

TINY = Path(__file__).resolve().parents[3] / "data_specs" / "curriculum" / "tiny.yaml"


def _stage(**encoders) -> StageSpec:
    """tiny.yaml's SFT stage with both encoders trained too (so both are sharded) and `encoders`."""
    sft = CurriculumSpec.load(TINY).stage("sft").model_dump()
    sft = {**sft, "train": [*sft["train"], "vit", "audio_encoder"], "freeze": []}
    parallel = {**sft["parallel"], "encoders": encoders} if encoders else sft["parallel"]
    return StageSpec.model_validate({**sft, "parallel": parallel})


def _build(stage: StageSpec) -> OmniModel:
    model = OmniModel(get_preset("tiny"), 5, 6)
    apply_freezing(model, stage)
    encoders = ShardedEncoders.build(model, stage)
    # the joint clipping norm counts each shard once: summed over the shard dimension, not across HSDP replicas
    assert encoders.shard_group is next(model.vit.parameters()).device_mesh.get_group("shard")
    return model


def _blocks(model: OmniModel) -> list:
    return [*model.vit.blocks, *model.audio_encoder.layers]


def _recomputed(block) -> bool:
    return "checkpoint" in (_get_registry(block) or {})


def test_defaults_are_plain_fsdp_recomputed_one_chunk(single_process):
    model = _build(_stage())
    for encoder in (model.vit, model.audio_encoder):
        mesh = next(encoder.parameters()).device_mesh
        assert mesh.mesh_dim_names == ("shard",) and mesh.shape == (1,)
    assert all(_recomputed(b) for b in _blocks(model))
    assert model.encoder_bridge.num_chunks == 1


def test_build_honours_each_encoder_field(single_process):
    model = _build(_stage(shard_size=1, activation_checkpointing=False, bridge_chunks=3))
    for encoder in (model.vit, model.audio_encoder):
        mesh = next(encoder.parameters()).device_mesh
        assert mesh.mesh_dim_names == ("replicate", "shard") and mesh.shape == (1, 1)  # HSDP layout
    assert not any(_recomputed(b) for b in _blocks(model))
    assert model.encoder_bridge.num_chunks == 3


def test_shard_size_that_does_not_divide_the_run_is_refused(single_process):
    stage = _stage(shard_size=2)  # a one-process CPU stage: only the run knows its world size
    # run_stage refuses it at launch (its data-parallel plan), before any model is built ...
    with pytest.raises(ValueError, match=r"stage 'sft' started with 1 process\(es\): parallel.encoders.shard_size 2"):
        plan_data_parallel(stage, world=1, rank=0)
    # ... and build itself, for any other caller
    with pytest.raises(ValueError) as err:
        _build(stage)
    message = str(err.value)
    assert "stage 'sft' at 1 processes, pipeline 1: parallel.encoders.shard_size 2 does not divide the encoder " \
           "mesh of 1 ranks" in message and "use one of [1] or drop shard_size" in message  # fmt: skip
