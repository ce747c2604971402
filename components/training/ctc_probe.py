"""Held-out greedy CTC word error rate of the audio encoder, measured when a stage that trains with the
`ctc` loss ends.

CTC first learns to emit nothing but blanks: at the tiny scale that plateau lasts ~100 updates, and a stage
that stops on it leaves an encoder whose loss looks fine but which tells the LLM nothing (measured: make run's
encoder after 2 x 100 steps decoded every eval clip to an empty transcript). The probe decodes up to
`MAX_CLIPS` ASR clips of each dataset's eval split (sentences and voices training never had) with the
encoder's CTC head, so the stage's MLflow run shows `ctc_greedy_wer` next to its loss.
"""

from __future__ import annotations

from pathlib import Path

from components.evaluation.items import split_samples
from components.evaluation.metrics import word_errors
from components.training.render import render_prompt
from model.config import ModelPreset
from model.omni import OmniModel

MAX_CLIPS = 32


def ctc_greedy_wer(model: OmniModel, datasets: dict[str, Path], tokenizer, preset: ModelPreset) -> float | None:
    """Word errors / reference words over the first MAX_CLIPS eval-split ASR clips (by key) of `datasets`;
    None when they hold none or this pipeline stage does not hold the encoder. Under FSDP2 every rank of
    the encoder's mesh must call it (the forward gathers shards): they decode the same clips in order."""
    encoder = model.audio_encoder
    if encoder is None:
        return None
    clips = [s for folder in datasets.values() for s in split_samples(folder, "asr", "eval")][:MAX_CLIPS]
    errors = words = 0
    for sample in clips:
        features = render_prompt(sample, tokenizer, preset.vit, preset.audio_encoder).audio_features
        if not features:
            continue
        hypothesis = tokenizer.decode(encoder.ctc_greedy_decode(features[0]))
        e, w = word_errors(sample["json"]["labels"]["transcript"], hypothesis)
        errors, words = errors + e, words + w
    return errors / words if words else None
