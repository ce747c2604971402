"""Near-duplicate matching over fingerprints (`components.ingest.fingerprint`): re-encoded, resized or
trimmed copies of one clip, within one modality.

Two items match when, at some time offset, enough of their aligned fingerprint slots agree:

- video: at least `min_matching_fraction` of the aligned informative frames are within `max_hamming`
  pHash bits and `max_colour_difference` per colour cell; when both clips have audio, the audio must
  match too, near the same offset (same pictures with another soundtrack are another clip);
- audio: in every half second of the aligned audio, the bit error rate of the sub-fingerprints is at
  most `max_audio_bit_error_rate` (measured in the worst half second: re-encoded or trimmed copies
  0.08-0.19, espeak-ng utterances that differ in one word 0.37-0.55, unrelated sounds about 0.5);
- image: the one frame matches.

The overlap must span `min_overlap_s`, or `SHORT_CLIP_SHARE` of the shorter clip when that is shorter.

**Blocking, so matching is not O(n^2).** Each informative frame is indexed under its four 16-bit pHash
bands (two frames within 10 bits often share a band exactly; a clip has many frames, so a copy shares
some), each audio hop under its 20-bit code. A query looks up its keys, and every hit votes for
(item, offset = position there - position here); only the best-voted offsets of each hit item are
verified. Buckets holding more than `MAX_BUCKET` entries are skipped as too common to tell items apart
(uniform or repeated content). Cost: O(K) to index K keys; a query costs O(keys x MAX_BUCKET) votes and
O(window) per verified offset, so a corpus of n items costs O(n) with the constants above instead of
n^2 / 2 full comparisons. With 2^16 frame buckets per band and 2^20 audio buckets, the buckets stay under
the cap up to roughly 10^5 clips (40 frames each); past that, common keys start being skipped.

**Deterministic.** `select_near_duplicates` walks the items in a fixed priority order and compares each
only with the items kept before it; the first kept match is its original. So the result depends on the
inputs alone (not on worker count or discovery order), every recorded pair is a direct match, and no two
kept items match each other.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from components.ingest.fingerprint import AUDIO_HOP_S, FRAME_STEP_S, Fingerprint
from components.specs.dataset import NearDuplicateSpec

MATCHED_MODALITIES = ("video", "audio", "image")
SHORT_CLIP_SHARE = 0.8
MAX_BUCKET = 64
OFFSETS_VERIFIED = 3  # best-voted offsets checked per candidate item (each with its two neighbours)
AUDIO_BITS = 20
AUDIO_BLOCK = 16  # hops (0.5 s): every stretch this long must pass on its own
MIN_AUDIO_HOPS = 16  # about half a second of non-quiet audio; less is not enough to confirm anything
_BAND_MASK = np.uint64(0xFFFF)


@dataclass(frozen=True)
class NearMatch:
    original: str
    offset_s: float  # where the copy starts inside the original (a copy trimmed by 1 s at the start: 1.0)
    evidence: str  # what agreed, for duplicates.jsonl


def _frame_keys(fp: Fingerprint) -> list[tuple[tuple, int]]:
    keys = []
    for pos in np.flatnonzero(fp.frame_valid):
        value = fp.frame_hashes[pos]
        keys += [(("f", band, int((value >> np.uint64(16 * band)) & _BAND_MASK)), int(pos)) for band in range(4)]
    return keys


def _audio_keys(fp: Fingerprint) -> list[tuple[tuple, int]]:
    return [(("a", int(fp.audio_codes[pos])), int(pos)) for pos in np.flatnonzero(fp.audio_valid)]


def _aligned(n_a: int, n_b: int, offset: int) -> tuple[slice, slice]:
    """Slices of a and b where b's position p faces a's position p + offset."""
    start_b = max(0, -offset)
    stop_b = min(n_b, n_a - offset)
    if stop_b <= start_b:
        return slice(0, 0), slice(0, 0)
    return slice(start_b + offset, stop_b + offset), slice(start_b, stop_b)


def _required_overlap_s(spec: NearDuplicateSpec, shorter_s: float) -> float:
    return min(spec.min_overlap_s, SHORT_CLIP_SHARE * shorter_s)


def _frames_agree(orig: Fingerprint, copy: Fingerprint, offset: int, spec: NearDuplicateSpec) -> tuple[int, int]:
    """(aligned informative frames, of which matching) with copy slot p facing orig slot p + offset."""
    sa, sb = _aligned(len(orig.frame_hashes), len(copy.frame_hashes), offset)
    both = orig.frame_valid[sa] & copy.frame_valid[sb]
    bits = np.bitwise_count(orig.frame_hashes[sa] ^ copy.frame_hashes[sb])
    colour = np.abs(orig.frame_colours[sa].astype(np.int16) - copy.frame_colours[sb].astype(np.int16)).max(axis=1)
    good = both & (bits <= spec.max_hamming) & (colour <= spec.max_colour_difference)
    return int(both.sum()), int(good.sum())


def _audio_error(orig: Fingerprint, copy: Fingerprint, offset: int) -> tuple[int, float]:
    """(aligned non-quiet hops, worst bit error rate over any AUDIO_BLOCK consecutive ones), copy hop p
    facing orig hop p + offset. The worst stretch, not the mean, because two utterances that share all
    but one word ("bo says one" / "bo says two") agree on average but not where they differ."""
    sa, sb = _aligned(len(orig.audio_codes), len(copy.audio_codes), offset)
    both = orig.audio_valid[sa] & copy.audio_valid[sb]
    errors = np.bitwise_count(orig.audio_codes[sa][both] ^ copy.audio_codes[sb][both]).astype(np.int64)
    if errors.size == 0:
        return 0, 1.0
    window = min(AUDIO_BLOCK, errors.size)
    totals = np.convolve(errors, np.ones(window, np.int64), mode="valid")
    return int(errors.size), float(totals.max()) / (AUDIO_BITS * window)


def _best_audio_offset(
    orig: Fingerprint, copy: Fingerprint, offsets: list[int], spec: NearDuplicateSpec
) -> tuple[int, float] | None:
    """The offset with the lowest bit error rate among `offsets` that passes, with that rate."""
    shorter = min(orig.num_valid_hops, copy.num_valid_hops) * AUDIO_HOP_S
    need = _required_overlap_s(spec, shorter)
    best = None
    for offset in offsets:
        hops, ber = _audio_error(orig, copy, offset)
        if hops * AUDIO_HOP_S >= need and ber <= spec.max_audio_bit_error_rate and (best is None or ber < best[1]):
            best = (offset, ber)
    return best


def _has_audio(fp: Fingerprint) -> bool:
    return fp.num_valid_hops >= MIN_AUDIO_HOPS


class NearDuplicateIndex:
    """Fingerprints of one modality, indexed by their blocking keys; `find` returns the first match."""

    def __init__(self, modality: str, spec: NearDuplicateSpec):
        if modality not in MATCHED_MODALITIES:
            raise ValueError(f"no near-duplicate matching for modality {modality!r}")
        self.modality, self.spec = modality, spec
        self._items: list[tuple[str, Fingerprint]] = []
        self._buckets: dict[tuple, list[tuple[int, int]]] = defaultdict(list)

    def _keys(self, fp: Fingerprint) -> list[tuple[tuple, int]]:
        return _audio_keys(fp) if self.modality == "audio" else _frame_keys(fp)

    def add(self, item_id: str, fp: Fingerprint) -> None:
        index = len(self._items)
        self._items.append((item_id, fp))
        for key, pos in self._keys(fp):
            self._buckets[key].append((index, pos))

    def find(self, fp: Fingerprint) -> NearMatch | None:
        """The earliest-added item that `fp` is a near copy of, or None."""
        votes: dict[int, Counter] = defaultdict(Counter)
        for key, pos in self._keys(fp):
            bucket = self._buckets.get(key, ())
            if len(bucket) > MAX_BUCKET:
                continue
            for index, their_pos in bucket:
                votes[index][their_pos - pos] += 1
        for index in sorted(votes):
            offsets = sorted({o + d for o, _ in votes[index].most_common(OFFSETS_VERIFIED) for d in (-1, 0, 1)})
            match = self._verify(self._items[index], fp, offsets)
            if match is not None:
                return match
        return None

    def _verify(self, original: tuple[str, Fingerprint], copy: Fingerprint, offsets: list[int]) -> NearMatch | None:
        item_id, orig = original
        if self.modality == "audio":
            best = _best_audio_offset(orig, copy, offsets, self.spec)
            if best is None:
                return None
            return NearMatch(item_id, round(best[0] * AUDIO_HOP_S, 3), f"audio bit error rate {best[1]:.3f}")
        shorter = min(orig.num_valid_frames, copy.num_valid_frames) * FRAME_STEP_S
        need = _required_overlap_s(self.spec, shorter) if self.modality == "video" else 0.0
        for offset in sorted(offsets, key=abs):
            aligned, good = _frames_agree(orig, copy, offset, self.spec)
            if not aligned or aligned * FRAME_STEP_S < need or good < self.spec.min_matching_fraction * aligned:
                continue
            evidence = f"{good}/{aligned} frames match"
            if self.modality == "video" and _has_audio(orig) and _has_audio(copy):
                centre = round(offset * FRAME_STEP_S / AUDIO_HOP_S)
                spread = round(FRAME_STEP_S / AUDIO_HOP_S)
                audio = _best_audio_offset(orig, copy, list(range(centre - spread, centre + spread + 1)), self.spec)
                if audio is None:
                    continue
                evidence += f", audio bit error rate {audio[1]:.3f}"
            return NearMatch(item_id, round(offset * FRAME_STEP_S, 3), evidence)
        return None


Item = tuple[object, str, Fingerprint | None]  # (id, modality, fingerprint)


def select_near_duplicates(items: list[Item], spec: NearDuplicateSpec, kept: list[Item] = ()) -> dict:
    """items in priority order -> {copy id: NearMatch}. `kept` items are originals only, compared with
    first. Items without a fingerprint, or of a modality without matching (text), are always kept."""
    indexes: dict[str, NearDuplicateIndex] = {}
    copies: dict = {}
    for position, (item_id, modality, fp) in enumerate([*kept, *items]):
        if fp is None or modality not in MATCHED_MODALITIES:
            continue
        index = indexes.setdefault(modality, NearDuplicateIndex(modality, spec))
        match = index.find(fp) if position >= len(kept) else None
        if match is not None:
            copies[item_id] = match
        else:
            index.add(item_id, fp)
    return copies
