"""The speech-output suite: does the model say the right thing in codec tokens?

For each held-out clip of the assistant's voice (an unseen sentence; the demo's `assistant_speech`
family) the model is asked `<|user|> say: TRANSCRIPT<|assistant|>` and scored, teacher-forced, on the
semantic codebook: the share of the reference's semantic tokens (the clip's audio encoded by the
checkpoint's own codec) that the semantic head predicts exactly, one value per item. The model speaks in
one voice, so the reference is that voice: a clip in a voice it never heard says nothing about how well
it speaks (components/demo_data/families.py, ASSISTANT_VOICE). The
first semantic token's hit is kept per item too (`first_correct`).

Chance is a blind prior, not 1/codebook size: the score of always predicting the single most frequent
semantic code of the suite's references (the best any constant guess can do on these items). The blanked
control takes the text the model is asked to say away by swapping it: each clip is scored with the next
item's sentence asked for. A model that merely learnt the voice's codes scores the same there, one that
says what it is asked scores lower. An empty `say: ` was the control before, and it misled: no training
sample asks for nothing, so every model did worse on it whether or not it read the text (make run 9494a57:
semantic-code NLL 0.063 lower with the right sentence than with none, 0.002 with another sentence). The
suite spec says `output: speech` (data_specs/evals/speech_output.yaml); scoring.score_suite hands such
suites here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch

from components.evaluation.results import SuiteResult, summarise
from components.evaluation.scoring import LoadedModel
from components.specs.evals import EvalSuiteSpec
from components.training.render import waveform
from components.training.speech_render import render_speech_response
from model.omni import IGNORE, OmniBatch


@torch.no_grad()
def semantic_predictions(loaded: LoadedModel, transcript: str, codes: torch.Tensor) -> tuple[list[int], list[int]]:
    """(reference, predicted) semantic codes of one speech response, teacher-forced."""
    sample = render_speech_response("eval", transcript, codes, loaded.tokenizer)
    batch = OmniBatch(torch.tensor([sample.input_ids]), torch.tensor([sample.labels]),
                      audio_codes=sample.audio_codes[None])  # fmt: skip
    logits = loaded.model.audio_logits(batch)[0][0]
    target = sample.audio_labels[:, 0]
    at = target != IGNORE
    return target[at].tolist(), logits[at].argmax(-1).tolist()


def score_speech_output(loaded: LoadedModel, suite: EvalSuiteSpec, samples: Iterable[dict]) -> SuiteResult:
    if suite.chance != "majority":
        raise ValueError(f"suite {suite.name}: a speech-output suite's chance is 'majority' (the best constant "
                         f"semantic code), got {suite.chance!r}; set chance: majority in its spec")  # fmt: skip
    codec = loaded.model.codec
    clips = []  # (record base, transcript, codes) of each scorable item
    for sample in samples:
        meta = sample["json"]
        transcript = meta.get("labels", {}).get("transcript")
        if not transcript or "wav" not in sample:
            continue
        with torch.no_grad():
            codes = codec.encode(waveform(sample, codec.cfg.sample_rate))
        clips.append(({"id": meta["key"], "key": meta["key"], "sha256": meta["sha256"]}, transcript, codes))
    items, blanked, references = [], [], []
    for index, (base, transcript, codes) in enumerate(clips):
        for said, records in ((transcript, items), (_another_sentence(clips, index), blanked)):
            reference, predicted = semantic_predictions(loaded, said, codes)
            hits = [float(r == p) for r, p in zip(reference, predicted)]
            records.append(base | {"correct": float(np.mean(hits)), "first_correct": hits[0], "tokens": len(hits)})
        references.append(reference)
    if not items:
        raise ValueError(f"suite {suite.name}: no eval items with a transcript and audio in family {suite.family}")
    majority = Counter(code for ref in references for code in ref).most_common(1)[0][0]
    chance = float(np.mean([np.mean([code == majority for code in ref]) for ref in references]))
    return summarise(suite, items, chance, blanked if suite.blanked_control else None)


def _another_sentence(clips: list, index: int) -> str:
    """The control's request for clip `index`: the next clip's sentence that differs from its own ("" when
    every clip says the same)."""
    own = clips[index][1]
    for step in range(1, len(clips)):
        other = clips[(index + step) % len(clips)][1]
        if other != own:
            return other
    return ""
