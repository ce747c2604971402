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
                   max_steps=5, inspect_grads=lambda step, named: grads.update(named))  # fmt: skip
    result = run_stage(run)
    first, last = result.history[0], result.history[-1]
    assert math.isfinite(first["loss/ctc"]) and first["loss"] == pytest.approx(first["loss/ctc"])
    assert "loss/text" not in last and not any(k.startswith("loss/family/") for k in last)  # the LLM never ran
    assert last["loss/ctc"] < first["loss/ctc"]
    assert grads and all(n.startswith("audio_encoder.") and ".projector." not in n for n in grads)
    assert any(n.startswith("audio_encoder.ctc_head") and g.abs().sum() > 0 for n, g in grads.items())
    assert result.probes["ctc_greedy_wer"] >= 0.9  # 5 steps: still on the all-blank plateau


def test_the_ctc_probe_scores_what_the_ctc_head_decodes_against_held_out_transcripts(tiny_dataset):
    """ctc_greedy_wer decodes the eval split's ASR clips with the encoder's CTC head: a head that emits only
    blanks scores 1.0; a decoder that returns each clip's own transcript ids scores 0."""
    import torch

    from components.evaluation.items import split_samples
    from components.training.ctc_probe import ctc_greedy_wer
    from components.training.render import ctc_target_ids, render_prompt
    from model import tokenizer as tok
    from model.config import get_preset
    from model.distributed import init_parallel
    from model.omni import OmniModel

    init_parallel(seed=0)
    tokenizer = tok.load_tokenizer(tiny_dataset / "tokenizer.json")
    preset = get_preset("tiny")
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    datasets = {"demo": tiny_dataset}
    with torch.no_grad():
        model.audio_encoder.ctc_head.weight.zero_()
        model.audio_encoder.ctc_head.bias.fill_(-10.0)
        model.audio_encoder.ctc_head.bias[0] = 10.0  # blank at every step: empty transcripts
    assert ctc_greedy_wer(model, datasets, tokenizer, preset) == 1.0
    # A perfect recogniser of the held-out clips (keyed by their features): no errors. Train-split clips
    # are not in the table, so reading the wrong split fails here.
    held_out = {}
    for sample in split_samples(tiny_dataset, "asr", "eval"):
        features = render_prompt(sample, tokenizer, preset.vit, preset.audio_encoder).audio_features[0]
        held_out[features.sum().item()] = ctc_target_ids(tokenizer, sample["json"]["labels"]["transcript"])
    assert held_out
    model.audio_encoder.ctc_greedy_decode = lambda clip: held_out[clip.sum().item()]
    assert ctc_greedy_wer(model, datasets, tokenizer, preset) == 0.0
