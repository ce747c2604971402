"""The speech-output suite scores unseen sentences said in the assistant's voice, in codec tokens, against a
blind prior."""

import pytest
import torch

from components.evaluation.items import load_eval_samples
from components.evaluation.scoring import LoadedModel, score_suite
from components.specs.evals import EVALS_DIR, EvalSuiteSpec
from model import tokenizer as tok
from model.config import get_preset
from model.omni import OmniModel

SUITE = EvalSuiteSpec.load(EVALS_DIR / "speech_output.yaml")


@pytest.mark.slow
def test_speech_output_suite_scores_every_eval_clip(tiny_dataset, single_process):
    tokenizer = tok.load_tokenizer(tiny_dataset / "tokenizer.json")
    preset = get_preset("tiny")
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    samples = load_eval_samples(SUITE, {"demo": tiny_dataset})
    result = score_suite(LoadedModel(model.eval(), tokenizer, preset, {}), SUITE, samples, 0)
    assert result.num_items == len(samples) > 0
    assert 0 < result.chance <= 1 and 0 <= result.ci_low <= result.value <= result.ci_high <= 1
    assert all(item["tokens"] > 5 and item["first_correct"] in (0.0, 1.0) for item in result.items)
    # an untrained model is not above the best constant code; the control asks for the same clips with no text
    assert not result.above_chance
    assert result.blanked is not None and len(result.blanked_items) == result.num_items


def test_majority_chance_only_for_speech_output():
    data = SUITE.model_dump()
    with pytest.raises(ValueError, match="chance 'majority'"):
        EvalSuiteSpec.model_validate(data | {"output": "text"})
    with pytest.raises(ValueError, match="family assistant_speech, metric accuracy"):
        EvalSuiteSpec.model_validate(data | {"family": "asr"})
    with pytest.raises(ValueError, match="that family only with output: speech"):  # no text answer to score
        EvalSuiteSpec.model_validate(data | {"output": "text", "chance": "uniform"})


def test_the_control_asks_each_clip_for_another_items_sentence(monkeypatch):
    """An empty request is never trained, so any model scores lower on it: the control swaps the sentence."""
    from types import SimpleNamespace

    from components.evaluation import speech_output

    asked = []
    monkeypatch.setattr(speech_output, "waveform", lambda sample, rate: torch.zeros(1600))
    monkeypatch.setattr(speech_output, "semantic_predictions",
                        lambda loaded, said, codes: asked.append(said) or ([1, 2, 3], [1, 2, 0]))  # fmt: skip
    codec = SimpleNamespace(cfg=SimpleNamespace(sample_rate=16000), encode=lambda wave: torch.zeros(3, 4))
    loaded = SimpleNamespace(model=SimpleNamespace(codec=codec))
    said = ["red apple", "red apple", "two tigers"]
    samples = [{"json": {"key": f"k{i}", "sha256": f"s{i}", "labels": {"transcript": t}}, "wav": b""}
               for i, t in enumerate(said)]  # fmt: skip
    result = speech_output.score_speech_output(loaded, SUITE, samples)
    assert asked == ["red apple", "two tigers", "red apple", "two tigers", "two tigers", "red apple"]
    assert result.num_items == 3 and len(result.blanked_items) == 3
