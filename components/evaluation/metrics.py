"""Suite metrics from per-item records, their bootstrap CIs and paired differences. numpy only: the gate
and `omnistage status` use it without torch.

Per-item records carry what their metric sums: accuracy `correct` (0/1, or a fraction for partial credit),
wer `errors` + `words`, perplexity `nll` + `tokens`. Every record has an `id` unique within its suite
(the sample key, plus `#n` for the n-th question of a sample), which pairs the same item across two
evaluations (candidate vs champion) or across the media-blanked control.

CIs resample items (not tokens or words) with replacement. The generator is seeded from the seed and the
number of items only, so the same records give the same CI on every run and machine.
"""

from __future__ import annotations

import re

import numpy as np

METRIC_FIELDS = {"accuracy": ("correct",), "wer": ("errors", "words"), "perplexity": ("nll", "tokens")}


def normalise_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(Levenshtein distance over words, reference word count)."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def _columns(metric: str, items: list[dict]) -> tuple[np.ndarray, ...]:
    return tuple(np.array([float(i[f]) for i in items]) for f in METRIC_FIELDS[metric])


def _from_columns(metric: str, columns: tuple[np.ndarray, ...], axis: int = -1) -> np.ndarray:
    """The metric of (resampled) columns; the last axis runs over items."""
    if metric == "accuracy":
        return columns[0].mean(axis=axis)
    total = np.maximum(columns[1].sum(axis=axis), 1)
    ratio = columns[0].sum(axis=axis) / total
    return ratio if metric == "wer" else np.exp(ratio)


def aggregate(metric: str, items: list[dict]) -> float:
    return float(_from_columns(metric, _columns(metric, items)))


def _resamples(count: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, count]).integers(0, count, (samples, count))


def _interval(stats: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_ci(metric: str, items: list[dict], samples: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the suite metric over items."""
    columns = _columns(metric, items)
    index = _resamples(len(items), samples, seed)
    return _interval(_from_columns(metric, tuple(c[index] for c in columns)))


def paired_delta_ci(metric: str, first: list[dict], second: list[dict], samples: int,
                    seed: int = 0) -> tuple[float, float, float, int]:  # fmt: skip
    """(delta, CI low, CI high, items paired) of metric(first) - metric(second) on the items both hold,
    matched by `id`: one resample of item ids feeds both sides, so what the items share (their difficulty)
    cancels and only the difference between the two models (or model and control) is left."""
    by_id = {i["id"]: i for i in second}
    common = sorted(i["id"] for i in first if i["id"] in by_id)
    if not common:
        raise ValueError("no items in common: the two evaluations scored different data")
    mine = {i["id"]: i for i in first}
    a = _columns(metric, [mine[k] for k in common])
    b = _columns(metric, [by_id[k] for k in common])
    index = _resamples(len(common), samples, seed)
    stats = _from_columns(metric, tuple(c[index] for c in a)) - _from_columns(metric, tuple(c[index] for c in b))
    low, high = _interval(stats)
    delta = float(_from_columns(metric, a) - _from_columns(metric, b))
    return delta, low, high, len(common)
