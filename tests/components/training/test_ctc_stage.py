"""The CTC stage of the tiny curriculum through the ordinary run_stage / train_step path: it trains the audio
encoder on transcribed speech with the `ctc` loss alone, without running the LLM."""

import math

import pytest

from components.specs.curriculum import CurriculumSpec
from components.training.stage_runner import StageRun, run_stage
from tests.conftest import REPO_ROOT

CURRICULUM = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
STAGE = "stage0b-audio-ctc"


@pytest.mark.slow
def test_the_ctc_stage_trains_the_audio_encoder_on_transcribed_speech_only(tiny_dataset, tmp_path):
    grads = {}
    run = StageRun(CURRICULUM, STAGE, {"demo": tiny_dataset}, tiny_dataset / "tokenizer.json", tmp_path / "ctc",
                   max_steps=3, inspect_grads=lambda step, named: grads.update(named))  # fmt: skip
    result = run_stage(run)
    first, last = result.history[0], result.history[-1]
    assert math.isfinite(first["loss/ctc"]) and first["loss"] == pytest.approx(first["loss/ctc"])
    assert "loss/text" not in last and not any(k.startswith("loss/family/") for k in last)  # the LLM never ran
    assert last["loss/ctc"] < first["loss/ctc"]
    assert grads and all(n.startswith("audio_encoder.") and ".projector." not in n for n in grads)
    assert any(n.startswith("audio_encoder.ctc_head") and g.abs().sum() > 0 for n, g in grads.items())
