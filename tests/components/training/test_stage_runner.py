"""One tiny curriculum stage on the ingested demo-like corpus: learns, resumes identically, guards presets."""

import json

import pandas as pd
import pytest
import torch

from components.specs.curriculum import CurriculumSpec
from components.training.stage_runner import StageRun, run_stage
from tests.conftest import REPO_ROOT

CURRICULUM = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


def _run(dataset, out, **kw):
    return run_stage(StageRun(CURRICULUM, kw.pop("stage", "stage0-text"), {"demo": dataset},
                              tokenizer=dataset / "tokenizer.json", out=out, **kw))  # fmt: skip


@pytest.mark.slow
def test_text_stage_learns_and_reports_packing(dataset, tmp_path):
    result = _run(dataset, tmp_path / "a", max_steps=12)
    losses = [h["loss"] for h in result.history]
    assert result.steps == 12 and (result.checkpoint / "weights").is_dir()
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert 0 < result.packing_efficiency <= 1
    last = result.history[-1]
    assert last["tokens_per_s"] > 0 and "loss/family/text" in last  # stage0 trains on text only


@pytest.mark.slow
def test_killed_stage_resumes_to_the_same_loss(dataset, tmp_path):
    straight = _run(dataset, tmp_path / "straight", max_steps=8, checkpoint_every=4)
    _run(dataset, tmp_path / "split", max_steps=4, checkpoint_every=4)
    resumed = _run(dataset, tmp_path / "split", max_steps=8, checkpoint_every=4, resume=True)
    assert resumed.steps == 8
    assert abs(resumed.final_loss - straight.final_loss) < 1e-6
    assert resumed.data_order == straight.data_order[4:]  # the same samples in the same order


@pytest.mark.slow
def test_next_stage_initialises_from_the_previous_and_freezes(dataset, tmp_path):
    first = _run(dataset, tmp_path / "s0", max_steps=2)
    second = _run(dataset, tmp_path / "s1", stage="stage1-text-speech", init_from=first.checkpoint, max_steps=2)
    families = {k for h in second.history for k in h if k.startswith("loss/family/")}
    assert families <= {"loss/family/text", "loss/family/asr", "loss/family/voice_qa"} and len(families) >= 2
    before, after = _weights(first.checkpoint), _weights(second.checkpoint)
    frozen = [k for k in after if k.startswith("vit.") and "projector" not in k]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)  # vit frozen in stage 1
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("llm."))  # llm trained
    # --resume before the stage ever saved (a retried first attempt) still starts from the previous stage
    retried = _run(dataset, tmp_path / "s1-retry", stage="stage1-text-speech", init_from=first.checkpoint,
                   max_steps=2, resume=True)  # fmt: skip
    assert abs(retried.final_loss - second.final_loss) < 1e-6


def _weights(checkpoint):
    from components.training.checkpoint import load_weights
    from model.config import get_preset
    from model.omni import OmniModel

    model = OmniModel(get_preset("tiny"), 0, 1)
    load_weights(checkpoint, model, "tiny")
    return {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}


def test_checkpoint_of_another_preset_is_refused(dataset, tmp_path):
    (tmp_path / "other" / "checkpoint").mkdir(parents=True)
    (tmp_path / "other" / "checkpoint" / "meta.json").write_text(json.dumps({"preset": "small"}))
    with pytest.raises(ValueError, match="trained with preset 'small'"):
        _run(dataset, tmp_path / "x", init_from=tmp_path / "other", max_steps=1)


def test_corrupt_and_missing_shards_are_skipped_and_counted(dataset, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(dataset, damaged)
    manifest = pd.read_parquet(damaged / "manifest.parquet")
    text_shards = set(manifest[manifest.task_family == "text"].shard)
    spare = [damaged / "shards" / name for name in sorted(set(manifest.shard) - text_shards)]
    assert len(spare) >= 2, "the fixture needs two shards without text to damage one and lose another"
    spare[0].unlink()
    data = spare[1].read_bytes()
    spare[1].write_bytes(data[:700])  # cut inside its first member, as an interrupted copy leaves it
    result = _run(damaged, tmp_path / "out", max_steps=1)
    assert result.steps == 1
    assert result.data_problems["missing_shards"] == 1
    assert result.data_problems["skipped_corrupt"] >= 1
    assert result.history[-1]["data/missing_shards"] == 1


def test_only_the_families_the_mixture_draws_are_rendered(tiny_dataset, monkeypatch):
    """Rendering decodes every frame and waveform: a stage renders its mixture's families (and the ASR clips
    its speech responses are made of), not the whole dataset."""
    from components.training import stage_runner
    from model import tokenizer as tok
    from model.config import get_preset

    rendered = []
    real = stage_runner.render_samples
    monkeypatch.setattr(stage_runner, "render_samples",
                        lambda raw, *a, **k: rendered.append(raw["json"]["task_family"]) or real(raw, *a, **k))
    tokenizer = tok.load_tokenizer(tiny_dataset / "tokenizer.json")
    spec = CURRICULUM.stage("stage2-multimodal")  # captions only
    samples, by_family, _ = stage_runner.load_samples({"demo": tiny_dataset}, spec, tokenizer, get_preset("tiny"), 0)
    assert set(rendered) == {"image_caption"} and set(by_family) == {"image_caption"}, set(rendered)
    assert len(rendered) == len(samples) > 0


def test_speech_responses_without_the_assistants_clips_are_refused_by_name(text_dataset):
    """speech_response samples are made of the assistant's voice (assistant_speech clips): a dataset without
    them gets an error that names the family to add, not the sampler's generic 'no samples'."""
    from components.training import stage_runner
    from model import tokenizer as tok
    from model.codec import AudioCodec
    from model.config import get_preset

    preset = get_preset("tiny")
    spec = CURRICULUM.stage("stage1-text-speech")
    data = spec.data.model_copy(update={"mixture": {"text": 0.5, "speech_response": 0.5}})
    spec = spec.model_copy(update={"data": data})
    tokenizer = tok.load_tokenizer(text_dataset / "tokenizer.json")
    with pytest.raises(ValueError, match="speech_response, made of 'assistant_speech' clips"):
        stage_runner.load_samples({"demo": text_dataset}, spec, tokenizer, preset, 0, codec=AudioCodec(preset.codec))
