from pathlib import Path

import pytest
import yaml

from components.specs.curriculum import CurriculumSpec, check_dataset_versions
from components.specs.loading import SpecError

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "data_specs" / "curriculum").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_curriculum_loads(path):
    curriculum = CurriculumSpec.load(path)
    names = [s.name for s in curriculum.stages]
    assert names[0].startswith("stage0") and names[-1] == "sft"
    assert "audio_encoder" in curriculum.stage("sft").freeze
    stage5 = next(s for s in curriculum.stages if s.name.startswith("stage5"))
    if stage5.speech_input == "ctc_posteriors":  # the tiny recipe: the LLM learns to read the CTC posteriors
        assert "audio_encoder" in stage5.freeze and stage5.train == ["llm"]
    else:  # REFERENCE: the encoder aligns to a frozen LLM through its projector
        assert "llm" in stage5.freeze and stage5.train == ["audio_encoder", "audio_encoder_projector"]
    # a dumped spec validates again (KFP components pass curricula as JSON, defaults spelled out)
    assert CurriculumSpec.model_validate(curriculum.model_dump()) == curriculum


def test_full_recipe_carries_the_paper_numbers():
    full = CurriculumSpec.load(REPO / "data_specs" / "curriculum" / "longcat_omni.yaml")
    assert full.stage("stage0-text").budget.tokens == 1.6e13
    # The paper's other stage-1 weights (audio 0.25, audio_text 1.5, first_audio_token 0.1) return with their losses.
    assert full.stage("stage1-text-speech").loss_weights["text"] == 1.75
    assert full.stage("stage0b-audio-ctc").loss_weights == {"ctc": 1.0}
    assert (
        full.stage("stage4b-context-128k").rope_theta == 1e7 and full.stage("stage4b-context-128k").seq_length == 131072
    )
    assert full.stage("sft").optimizer.lr == 1e-5 and full.stage("sft").schedule.name == "cosine"
    # section 7: the encoders hybrid-sharded (one node's 8 GPUs per shard group), fully recomputed
    for stage in full.stages:
        encoders = stage.parallel.encoders
        trains_encoder = bool({"vit", "audio_encoder", "audio_encoder_projector"} & set(stage.train))
        expected = (8, True) if trains_encoder else (None, True)
        assert (encoders.shard_size, encoders.activation_checkpointing) == expected


def _broken(tmp_path, change) -> Path:
    doc = yaml.safe_load((REPO / "data_specs" / "curriculum" / "tiny.yaml").read_text())
    change(doc)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _stage(doc: dict, name: str) -> dict:
    return next(stage for stage in doc["stages"] if stage["name"] == name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["stages"][0].update(train=["llm", "vision_tower"]), "unknown module(s) ['vision_tower']"),
        (lambda d: d["stages"][1]["data"].update(mixture={"text": 0.5, "asr": 0.4}), "must sum to 1, they sum to 0.9"),
        (
            lambda d: d["stages"][0].update(
                parallel={"tensor": 3}, resources={"accelerator": "h100", "gpus_per_node": 8, "node_pool": "g"}
            ),
            "does not divide the 8 GPUs",
        ),
        (
            # Megatron folds EP into TP x CP x DP with expert-TP = TP: 16 x 8 GPUs cannot hold TP 2 x EP 32 x PP 4.
            lambda d: d["stages"][0].update(
                parallel={"tensor": 2, "pipeline": 4, "expert": 32},
                resources={"accelerator": "nvidia-h100-80gb", "gpus_per_node": 8, "nodes": 16, "node_pool": "g"},
            ),
            "stage 'stage0-text' (16 node(s) x 8 GPUs): expert parallel size 32 x tensor 2 does not divide",
        ),
        (
            lambda d: d["stages"][4]["resources"].update(accelerator="nvidia-h100-80gb", gpus_per_node=3),
            "field 'stages.4': Value error, stage 'stage2-multimodal': resources.gpus_per_node is 3; use one of "
            "[0, 1, 2, 4, 8, 16]",
        ),
        (lambda d: d["stages"][0]["resources"].update(gpus_per_node=8), "accelerator is 'cpu'"),
        (lambda d: d["stages"][0]["resources"].update(nodes=4), "resources.nodes is 4 without GPUs"),
        (
            lambda d: d["stages"][0]["resources"].update(processes_per_node=2),
            "stage 'stage0-text' (1 node(s) x 2 CPU processes): global_batch_size 1 is not a multiple of "
            "micro_batch_size 1 x data parallel 2",
        ),
        (
            lambda d: d["stages"][0]["resources"].update(accelerator="h100", gpus_per_node=4, processes_per_node=2),
            "resources.processes_per_node is 2 but gpus_per_node is 4",
        ),
        (lambda d: d["stages"][0]["resources"].update(node_pool="GPU pool!"), "field 'stages.0.resources.node_pool'"),
        (lambda d: d.update(cluster={"queue": "q", "priority": 1}), "field 'cluster.priority'"),
        (lambda d: d["stages"][0].update(init_from="stage9"), "not an earlier stage"),
        (lambda d: d["stages"][0].update(loss_weights={"smell": 1.0}), "unknown loss(es)"),
        (lambda d: d["stages"][0].update(budget={"steps": 1, "tokens": 5}), "exactly one of steps or tokens"),
        (
            lambda d: d["stages"][0].update(train=["llm", "codec"]),
            "stage 'stage0-text': the codec trains in a stage of its own (train: [codec])",
        ),
        (
            lambda d: d["stages"][0].update(loss_weights={"text": 1.0, "ctc": 0.5}),
            "stage 'stage0-text': loss_weights.ctc needs speech with what it says (av_qa: its words and beeps) from "
            "task families ['asr', 'voice_qa', 'av_qa'], but data.mixture has only ['text']; add one of them to the "
            "mixture or remove the weight",
        ),
        (
            # Without the CTC stage, stage 1 would freeze the audio encoder at its random initialisation.
            lambda d: d.update(
                stages=[
                    d["stages"][0],
                    {
                        **d["stages"][3],
                        "init_from": "stage0-text",
                        "speech_input": "encoder",
                        "freeze": ["audio_encoder"],
                        "train": ["llm", "audio_encoder_projector"],
                        "loss_weights": {"text": 1.75, "audio_text": 1.5},
                        "data": {
                            "datasets": {"demo": "latest"},
                            "mixture": {"text": 0.5, "asr": 0.25, "voice_qa": 0.25},
                        },
                    },
                ]
            ),
            "stage 'stage1-text-speech' freezes 'audio_encoder', which no earlier stage of its init_from chain "
            "(stage0-text) trained: it would stay randomly initialised; add 'audio_encoder' to the train list of "
            "this stage or of an earlier one (e.g. a CTC stage on the asr family",
        ),
        (
            lambda d: d["stages"][3].update(speech_input="encoder"),  # speech through the encoder's new projector
            "stage 'stage1-text-speech' feeds data through 'audio_encoder_projector', which no earlier stage",
        ),
        (
            # speech as CTC posteriors mixes the LLM's embeddings: the projector is not on the way
            lambda d: _stage(d, "stage5-audio-encoder").update(
                speech_input="ctc_posteriors",
                train=["audio_encoder", "audio_encoder_projector"],
                freeze=["llm", "vit", "vit_projector", "audio_embeddings", "audio_heads"],
            ),
            "stage 'stage5-audio-encoder' trains ['audio_encoder_projector'], which neither its data.mixture",
        ),
        (
            # pseudo-speech is what the LLM reads from a certain CTC head: no such input through the codec
            lambda d: d["stages"][3]["data"].update(mixture={"text": 0.5, "pseudo_asr": 0.5}),
            "stage 'stage1-text-speech': data.mixture.pseudo_asr feeds text as recognised tokens, which is how the "
            "LLM reads speech only with speech_input: ctc_posteriors (this stage: codec)",
        ),
        (
            lambda d: d["stages"][5].update(data={"datasets": {"demo": "latest"}, "mixture": {"pseudo_av": 1.0}}),
            "stage 'stage3-annealing': data.mixture.pseudo_av feeds text as recognised tokens, which is how the "
            "LLM reads speech only with speech_input: ctc_posteriors (this stage: codec)",
        ),
        (
            lambda d: d["stages"][0].update(train=["llm", "vit"]),
            "stage 'stage0-text' trains ['vit'], which neither its data.mixture (['text']) nor its loss_weights "
            "(['text']) reach",
        ),
        (
            # stage2 trains the ViT: its encoder mesh is one pipeline stage's 8 / 2 = 4 GPUs
            lambda d: d["stages"][4].update(
                parallel={"pipeline": 2, "encoders": {"shard_size": 3}},
                resources={"accelerator": "nvidia-h100-80gb", "gpus_per_node": 8, "node_pool": "g"},
            ),
            "stage 'stage2-multimodal' (1 node(s) x 8 GPUs): parallel.encoders.shard_size 3 does not divide the "
            "encoder mesh of 4 ranks (world / pipeline); use one of [1, 2, 4] or drop shard_size for plain FSDP",
        ),
        (
            lambda d: d["stages"][0].update(parallel={"encoders": {"bridge_chunks": 4}}),
            "stage 'stage0-text' sets parallel.encoders but trains no encoder module",
        ),
        (
            lambda d: d["stages"][4].update(parallel={"encoders": {"shards": 2}}),
            "field 'stages.4.parallel.encoders.shards'",
        ),
        (
            lambda d: d["stages"][4].update(parallel={"encoders": {"bridge_chunks": 0}}),
            "field 'stages.4.parallel.encoders.bridge_chunks'",
        ),
    ],
    ids=[
        "unknown-module",
        "weights-do-not-sum",
        "parallel-does-not-divide",
        "expert-does-not-fit",
        "gpus-per-node",
        "gpus-on-cpu",
        "multi-node-cpu",
        "processes-vs-batch",
        "processes-vs-gpus",
        "pool-label",
        "cluster-field",
        "bad-init-from",
        "unknown-loss",
        "budget",
        "codec-with-others",
        "unproducible-loss",
        "freezes-untrained-module",
        "uses-untrained-module",
        "ctc-posteriors-skip-the-projector",
        "pseudo-speech-without-ctc-posteriors",
        "pseudo-av-without-ctc-posteriors",
        "trains-unreached-module",
        "encoder-shard-does-not-divide",
        "encoders-without-encoder",
        "encoder-field",
        "bridge-chunks",
    ],
)
def test_wrong_curriculum_fails_with_file_field_and_fix(tmp_path, change, message):
    path = _broken(tmp_path, change)
    with pytest.raises(SpecError) as err:
        CurriculumSpec.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("checkpoint_uri", "/mnt/checkpoints", "cluster.checkpoint_uri must be an object-store URI, s3://bucket/prefix "
         "or gs://bucket/prefix (a shared volume is checkpoint_storage)"),
        ("dvc_remote", "https://dvc.example/store", "cluster.dvc_remote must be an object-store URI, s3://"),
        ("dvc_remote", "s3://", "cluster.dvc_remote must be an object-store URI"),  # no bucket
        ("s3_endpoint", "minio.example:9000", "cluster.s3_endpoint must be an http:// or https:// URL with a host"),
        ("admission_timeout_s", 0, "greater than 0"),
        ("launcher_retries", -1, "greater than or equal to 0"),
    ],
    ids=["checkpoint-path", "dvc-http", "dvc-no-bucket", "endpoint-scheme", "admission-zero", "retries-negative"],
)  # fmt: skip
def test_cluster_storage_and_launcher_settings_are_checked_with_file_and_field(tmp_path, field, value, message):
    path = _broken(tmp_path, lambda d: d.update(cluster={field: value}))
    with pytest.raises(SpecError) as err:
        CurriculumSpec.load(path)
    assert str(path) in str(err.value) and f"field 'cluster.{field}'" in str(err.value) and message in str(err.value)


def test_cluster_storage_settings_become_the_pods_environment():
    cluster = CurriculumSpec.load(REPO / "data_specs" / "curriculum" / "longcat_omni.yaml").cluster
    assert cluster.checkpoint_uri.startswith("s3://") and cluster.dvc_remote.startswith("s3://")
    assert cluster.object_storage_env() == {"OMNISTAGE_CHECKPOINT_URI": cluster.checkpoint_uri,
                                            "OMNISTAGE_DVC_REMOTE": cluster.dvc_remote}  # fmt: skip
    gcs = cluster.model_copy(update={"checkpoint_uri": "gs://b/ckpt", "s3_endpoint": "https://minio:9000"})
    assert gcs.object_storage_env()["AWS_ENDPOINT_URL"] == "https://minio:9000"
    assert CurriculumSpec.load(REPO / "data_specs" / "curriculum" / "tiny.yaml").cluster.object_storage_env() == {}


def test_missing_dataset_versions_are_reported():
    curriculum = CurriculumSpec.load(REPO / "data_specs" / "curriculum" / "tiny.yaml")
    check_dataset_versions(curriculum, {"demo": {"abc.dir"}}, "tiny.yaml")  # 'latest' matches
    pinned = curriculum.model_copy(update={"stages": [curriculum.stages[0].model_copy(
        update={"data": curriculum.stages[0].data.model_copy(update={"datasets": {"demo": "zzz.dir"}})})]})  # fmt: skip
    with pytest.raises(SpecError, match="has no version 'zzz.dir'"):
        check_dataset_versions(pinned, {"demo": {"abc.dir"}}, "tiny.yaml")
    with pytest.raises(SpecError, match="'demo' is not ingested"):
        check_dataset_versions(curriculum, {}, "tiny.yaml")
