"""Pack variable-length samples into fixed-length training sequences.

Samples are never split (a multimodal sample cut in half loses its question or its answer). Packing is
best-fit decreasing within a window of upcoming samples, which keeps the stream order roughly intact (so
the mixture stays mixed and resumption stays cheap) while filling sequences almost completely.
`packing_efficiency` is the share of non-padding tokens: what `omnistage train` reports per step.

`CarryOverPacker` is what training uses: it emits only well-filled sequences and carries the samples of
under-filled ones into the next window, so nothing drawn is dropped and its state (the carried keys) is
saved with the checkpoint for an identical resume.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
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


class CarryOverPacker:
    """Fixed-length sequences from a stream of (key, length) draws; under-filled bins wait for more samples."""

    def __init__(self, seq_length: int, window: int = 32, min_fill: float = 0.97):
        self.seq_length, self.window, self.min_fill = seq_length, window, min_fill
        self.pending: list[tuple[str, int]] = []  # drawn, not yet emitted, in draw order
        self.ready: list[list[str]] = []  # packed sequences (keys) waiting to be emitted

    def next(self, draw: Callable[[], tuple[str, int]]) -> list[str]:
        """Keys of the next sequence; `draw()` returns the next (key, length) from the mixture."""
        while not self.ready:
            while len(self.pending) < self.window:
                self.pending.append(draw())
            bins = pack_window([(i, n) for i, (_, n) in enumerate(self.pending)], self.seq_length)
            full = [b for b in bins if b.used >= self.min_fill * self.seq_length]
            if not full:  # nothing fills up (e.g. only long samples): emit the fullest to make progress
                full = [max(bins, key=lambda b: (b.used, -min(b.sample_ids)))]
            taken = {i for b in full for i in b.sample_ids}
            # Emit in draw order of each bin's first sample so the stream order survives packing.
            self.ready = [[self.pending[i][0] for i in sorted(b.sample_ids)] for b in
                          sorted(full, key=lambda b: min(b.sample_ids))]  # fmt: skip
            self.pending = [item for i, item in enumerate(self.pending) if i not in taken]
        return self.ready.pop(0)

    def state_dict(self) -> dict:
        return {"pending": [list(p) for p in self.pending], "ready": [list(r) for r in self.ready]}

    def load_state_dict(self, state: dict) -> None:
        self.pending = [(key, int(n)) for key, n in state["pending"]]
        self.ready = [list(r) for r in state["ready"]]
