"""Pack variable-length samples into fixed-length training sequences.

Samples are never split (a multimodal sample cut in half loses its question or its answer). Packing is
best-fit decreasing within a window of upcoming samples, which keeps the stream order roughly intact (so
the mixture stays mixed and resumption stays cheap) while filling sequences almost completely.
`packing_efficiency` is the share of non-padding tokens: what `omnistage train` reports per step.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class PackedSequence:
    sample_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def used(self) -> int:
        return sum(self.lengths)


def pack_window(lengths: list[tuple[int, int]], seq_length: int) -> list[PackedSequence]:
    """Best-fit decreasing for one window of (sample_id, length); lengths over seq_length are refused."""
    too_long = [(i, n) for i, n in lengths if n > seq_length]
    if too_long:
        raise ValueError(f"samples longer than the sequence length {seq_length}: {too_long[:5]}; "
                         "raise seq_length or lower the frame/audio budget per sample")  # fmt: skip
    bins: list[PackedSequence] = []
    free: list[tuple[int, int]] = []  # sorted (free tokens, bin index)
    for sample_id, length in sorted(lengths, key=lambda item: (-item[1], item[0])):
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            room, index = free.pop(slot)
        else:
            bins.append(PackedSequence())
            room, index = seq_length, len(bins) - 1
        bins[index].sample_ids.append(sample_id)
        bins[index].lengths.append(length)
        bisect.insort(free, (room - length, index))
    return bins


def pack_stream(lengths: Iterable[tuple[int, int]], seq_length: int, window: int = 256) -> Iterator[PackedSequence]:
    """Pack a stream window by window; yields sequences in a deterministic order."""
    buffer: list[tuple[int, int]] = []
    for item in lengths:
        buffer.append(item)
        if len(buffer) == window:
            yield from pack_window(buffer, seq_length)
            buffer = []
    if buffer:
        yield from pack_window(buffer, seq_length)


def packing_efficiency(sequences: list[PackedSequence], seq_length: int) -> float:
    return sum(s.used for s in sequences) / (len(sequences) * seq_length) if sequences else 0.0
