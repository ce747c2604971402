"""The codec stage trains the codec on the demo speech, and the next stages feed speech as its tokens."""

import pytest
import torch

from components.specs.curriculum import CurriculumSpec
from components.training.stage_runner import StageRun, load_samples, run_stage
from model import tokenizer as tok
from model.config import get_preset
from tests.conftest import REPO_ROOT

CURRICULUM = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")


def _run(dataset, out, stage, **kw):
    return run_stage(StageRun(CURRICULUM, stage, {"demo": dataset}, tokenizer=dataset / "tokenizer.json", out=out,
                              **kw))  # fmt: skip


@pytest.mark.slow
def test_codec_stage_learns_and_its_codes_reach_stage1(tiny_dataset, tmp_path):
    codec = _run(tiny_dataset, tmp_path / "codec", "codec", max_steps=30)
    mel = [h["loss/codec_mel_l1"] for h in codec.history]
    assert sum(mel[-5:]) / 5 < 0.8 * sum(mel[:5]) / 5, mel
    stage1 = _run(tiny_dataset, tmp_path / "s1", "stage1-text-speech", init_from=codec.checkpoint, max_steps=3)
    audio = {"loss/audio_semantic", "loss/audio_acoustic", "loss/first_audio_token"}
    assert any(audio <= set(step) for step in stage1.history), stage1.history  # a step drew a speech response
    # the trained codec rides in the checkpoint: stage-1 samples carry its codes
    spec = CURRICULUM.stage("stage1-text-speech")
    tokenizer = tok.load_tokenizer(tiny_dataset / "tokenizer.json")
    samples, by_family, _ = load_samples({"demo": tiny_dataset}, spec, tokenizer, get_preset("tiny"), 0,
                                         codec=_codec(stage1.checkpoint))  # fmt: skip
    speech = samples[by_family["speech_response"][0]]
    asr = samples[by_family["asr"][0]]
    assert speech.first_audio is not None and (speech.audio_labels[:, 0] >= 0).sum() > 5
    assert asr.audio_codes is not None and not asr.audio_features and asr.text_loss == "audio_text"
    assert torch.equal(_codec(stage1.checkpoint).encoder_in.weight, _codec(codec.checkpoint).encoder_in.weight)
    # Resumed mid-stage, the speech is encoded by the checkpoint's trained codec, not a freshly built one.
    split = tmp_path / "s1-split"
    _run(tiny_dataset, split, "stage1-text-speech", init_from=codec.checkpoint, max_steps=2, checkpoint_every=2)
    resumed = _run(tiny_dataset, split, "stage1-text-speech", init_from=codec.checkpoint, max_steps=3,
                   checkpoint_every=2, resume=True)  # fmt: skip
    assert resumed.data_order == stage1.data_order[2:]
    assert abs(resumed.final_loss - stage1.final_loss) < 1e-6, (resumed.final_loss, stage1.final_loss)


def _codec(checkpoint):
    from components.training.checkpoint import load_weights
    from model.omni import OmniModel

    model = OmniModel(get_preset("tiny"), 5, 6)
    load_weights(checkpoint, model, "tiny")
    return model.codec


def test_codec_in_a_mixed_stage_is_refused():
    data = CURRICULUM.model_dump()
    data["stages"][1]["train"] = ["codec", "llm"]
    with pytest.raises(ValueError, match=r"the codec trains in a stage of its own"):
        CurriculumSpec.model_validate(data)
    data = CURRICULUM.model_dump()
    data["stages"] = [s for s in data["stages"] if s["name"] != "codec"]
    data["stages"][1]["init_from"] = "stage0-text"
    with pytest.raises(ValueError, match="no earlier stage trains the codec"):
        CurriculumSpec.model_validate(data)
