"""Blind-prior baselines: what a model that never looks at the input can score.

For WER the baseline is the best constant transcript: every distinct transcript of the training split
(and the empty one, WER 1.0) is tried as the answer to every eval item, and the lowest WER wins. A model
that outputs one memorised training sentence for any audio reaches that number without listening, so
"better than chance" for ASR means better than it. The pick is made on the eval items, which makes the
baseline a little optimistic for the blind guesser: a conservative (harder to beat) chance line.
"""

from __future__ import annotations

from components.evaluation.metrics import word_errors


def best_constant_transcript(train_transcripts: list[str], references: list[str]) -> tuple[str, float]:
    """(transcript, WER) of the constant transcript with the lowest corpus WER on `references`."""
    if not references:
        raise ValueError("no eval references to score a constant transcript against")
    words = max(1, sum(word_errors(r, "")[1] for r in references))
    best, best_wer = "", 1.0  # the empty transcript deletes every word
    for candidate in sorted(set(train_transcripts)):
        wer = sum(word_errors(r, candidate)[0] for r in references) / words
        if wer < best_wer:
            best, best_wer = candidate, wer
    return best, best_wer
