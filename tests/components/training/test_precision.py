"""A stage's `precision: bf16`: Megatron mixed precision through run_stage, its checkpoint in fp32 evaluation,
and the spec's refusal of anything but fp32 / bf16. CPU runs (torch's bf16 kernels)."""

import math

import pytest
import torch
import yaml
from megatron.core import dist_checkpointing

from components.specs.curriculum import CurriculumSpec
from components.specs.loading import SpecError
from components.training.stage_runner import StageRun, run_stage
from model.omni import IGNORE, OmniBatch
from tests.conftest import REPO_ROOT

TINY = REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml"
STEPS = 3
# From the same init (the bf16 weights are the fp32 ones rounded) the tiny model's first-step loss differs from
# fp32's by 1.5e-5 (6.941668 vs 6.941653, measured): at init the logits are small and the loss is near ln(vocab)
# whatever the precision. 1e-3 relative leaves room for other CPUs' kernels.
FIRST_LOSS_RTOL = 1e-3


def _curriculum(precision: str, stage: str) -> CurriculumSpec:
    curriculum = CurriculumSpec.load(TINY)
    one = curriculum.stage(stage).model_copy(update={"precision": precision, "init_from": None})
    return curriculum.model_copy(update={"stages": [one]})


def _run(dataset, out, precision: str, max_steps: int, stage: str = "stage0-text"):
    return run_stage(StageRun(_curriculum(precision, stage), stage, {"demo": dataset},
                              tokenizer=dataset / "tokenizer.json", out=out, max_steps=max_steps))  # fmt: skip


@pytest.fixture(scope="module")
def bf16_run(tiny_dataset, tmp_path_factory):
    return _run(tiny_dataset, tmp_path_factory.mktemp("bf16"), "bf16", STEPS)


def _saved_dtypes(folder) -> dict[str, torch.dtype]:
    """Key -> dtype of the tensors a dist_checkpointing folder holds (read from its metadata)."""
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    return {k: m.properties.dtype for k, m in metadata.items() if hasattr(m, "properties")}


def test_bf16_stage_trains_with_fp32_main_weights(bf16_run, tiny_dataset, tmp_path):
    losses = [h["loss"] for h in bf16_run.history]
    assert bf16_run.steps == STEPS and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    weights = _saved_dtypes(bf16_run.checkpoint / "weights")  # the module's parameters as trained
    llm = {
        k: d
        for k, d in weights.items()
        if k.startswith(("llm.", "audio_embeddings.", "audio_heads.")) and not k.endswith("expert_bias")
    }
    assert llm and set(llm.values()) == {torch.bfloat16}
    kept = {d for k, d in weights.items() if k.startswith(("vit.", "audio_encoder.", "codec.")) or "expert_bias" in k}
    assert kept == {torch.float32}
    state = _saved_dtypes(bf16_run.checkpoint / "optimizer")  # fp32 main parameters and Adam moments
    assert state and set(state.values()) == {torch.float32}
    # the main parameters are fp32 masters of the bf16 weights: each weight is its master rounded, and the
    # masters hold updates below bf16's resolution
    name = "llm.decoder.layers.dense_layers.0.self_attention.linear_proj.weight"
    weight = dist_checkpointing.load_plain_tensors(str(bf16_run.checkpoint / "weights"))[name]  # [layers, ...]
    master = dist_checkpointing.load_plain_tensors(str(bf16_run.checkpoint / "optimizer"))[
        f"optimizer.state.fp32_param.{name}"]  # fmt: skip
    assert torch.equal(master.bfloat16(), weight) and not torch.equal(master, weight.float())
    fp32 = _run(tiny_dataset, tmp_path / "fp32", "fp32", 1)
    assert abs(losses[0] - fp32.history[0]["loss"]) <= FIRST_LOSS_RTOL * fp32.history[0]["loss"]
    assert losses[0] != fp32.history[0]["loss"]  # the bf16 run did not silently train in fp32


def test_bf16_stage_resumes_from_its_fp32_main_weights(tiny_dataset, tmp_path):
    """A resumed bf16 stage continues from the saved fp32 masters (not from the bf16 weights rounded): the same
    loss as the uninterrupted run."""
    straight = _run(tiny_dataset, tmp_path / "straight", "bf16", 4)
    run = StageRun(_curriculum("bf16", "stage0-text"), "stage0-text", {"demo": tiny_dataset},
                   tokenizer=tiny_dataset / "tokenizer.json", out=tmp_path / "split", max_steps=2)  # fmt: skip
    run_stage(run)
    run.max_steps, run.resume = 4, True
    resumed = run_stage(run)
    assert resumed.steps == 4 and resumed.final_loss == straight.final_loss


def test_bf16_checkpoint_loads_into_fp32_evaluation(bf16_run):
    from megatron.core import dist_checkpointing

    from components.evaluation.scoring import load_checkpoint_model

    loaded = load_checkpoint_model(bf16_run.checkpoint).model  # what evaluation runs
    params = dict(loaded.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}
    saved = dist_checkpointing.load_plain_tensors(str(bf16_run.checkpoint / "weights"))
    weight = params["llm.decoder.layers.0.dense_layers.0.self_attention.linear_proj.weight"]
    stored = saved["llm.decoder.layers.dense_layers.0.self_attention.linear_proj.weight"]
    assert stored.dtype == torch.bfloat16 and torch.equal(weight, stored[0].float())  # [layers, ...]: bf16, exactly
    assert torch.equal(params["vit.patch_embed.weight"], saved["vit.patch_embed.weight"])  # fp32 encoders as saved
    ids = torch.tensor([[i for i in range(100, 120) if i not in (loaded.vision_pad_id, loaded.audio_pad_id)]])
    logits = loaded.text_logits(OmniBatch(ids, torch.full_like(ids, IGNORE)))
    assert logits.dtype == torch.float32 and bool(torch.isfinite(logits).all())


def test_bf16_stage_with_sharded_encoders_and_speech(tiny_dataset, tmp_path):
    """Images through the trained (FSDP2, fp32) ViT into the bf16 LLM, speech as codes of the fp32 codec into bf16
    audio embeddings and heads: every loss finite, the ViT still fp32."""
    result = _run(tiny_dataset, tmp_path / "s3", "bf16", 2, stage="stage3-annealing")
    assert result.encoder_parallel == "fsdp2"
    seen = {k for h in result.history for k in h}
    assert {"loss/vision", "loss/audio_semantic"} <= seen
    assert all(math.isfinite(v) for h in result.history for k, v in h.items() if k.startswith("loss"))
    weights = _saved_dtypes(result.checkpoint / "weights")
    assert {d for k, d in weights.items() if k.startswith("vit.")} == {torch.float32}
    assert {d for k, d in weights.items() if k.startswith("audio_heads.")} == {torch.bfloat16}


@pytest.mark.parametrize("precision", ["fp16", "float32", "BF16"])
def test_spec_refuses_other_precisions(tmp_path, precision):
    raw = yaml.safe_load(TINY.read_text())
    raw["stages"][0]["precision"] = precision
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        CurriculumSpec.load(path)
    message = str(err.value)
    assert "stages.0.precision" in message and "stage 'stage0-text'" in message
    assert repr(precision) in message and "['fp32', 'bf16']" in message


def test_codec_stage_refuses_bf16():
    raw = yaml.safe_load(TINY.read_text())
    codec = next(s for s in raw["stages"] if s["train"] == ["codec"])
    with pytest.raises(ValueError, match="codec stage trains in its own fp32 loop"):
        CurriculumSpec.model_validate({**raw, "stages": [{**codec, "precision": "bf16"}]})


def test_full_size_recipe_trains_every_stage_in_bf16():
    curriculum = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml")
    assert {s.precision for s in curriculum.stages} == {"bf16"}
    assert {s.precision for s in CurriculumSpec.load(TINY).stages} == {"fp32"}
