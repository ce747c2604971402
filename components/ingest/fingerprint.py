"""Perceptual fingerprints of one media file, computed in the probe phase for near-duplicate matching.

A fingerprint survives re-encoding, resizing and trimming, and is a few KB, so it is kept in the probe
table and the manifest (for the contamination check across datasets):

- **frames** (video and images): tiny RGB thumbnails of the frames at the fixed times (k + 0.5) * 0.5 s
  of the first `WINDOW_S` seconds. Fixed times, not times spread over the duration, make a copy trimmed
  by a multiple of 0.5 s a plain shift of the sequence, and the matcher slides over shifts. Each frame
  gives a 64-bit DCT pHash of its luma (structure; robust to scaling and compression) and a 4x4 grid of
  mean RGB (a pHash is blind to colour: a red and a green circle on one background hash alike). Nearly
  uniform frames (black, fades) carry no structure and are marked uninformative.
- **audio**: a Haitsma-Kalker style sub-fingerprint every 32 ms of 16 kHz mono audio, 20 bits: the signs
  of the time derivative of energy differences between 21 log-spaced bands (300-4000 Hz). Signs of
  differences ignore gain and codec colouring; quiet hops are marked uninformative.

Cost: only the first `WINDOW_S` seconds are decoded (one demux pass, single-threaded, H.264/HEVC
without their unreferenced frames, only frames next to a target scaled down), so a long video costs a
bounded prefix. Measured here (640x360 H.264 25 fps + AAC): about 0.15 CPU-s for an 8 s clip (the shard
phase decodes it in 0.27) and 0.4 CPU-s for a 60 s one (2.2); speech about 4 ms per second of audio.

The fixed constants are part of the format (`FORMAT_VERSION`): fingerprints of datasets ingested
at different times stay comparable, which the contamination check relies on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

FORMAT_VERSION = 1
FRAME_STEP_S = 0.5
WINDOW_S = 20.0
THUMB = 32  # pHash input size; the DCT keeps its 8x8 lowest frequencies
GRID = 4  # colour layout: GRID x GRID cells of mean RGB
FLAT_LUMA_STD = 3.0  # below this the frame has no structure to hash (of 255)
AUDIO_RATE = 16000
AUDIO_WINDOW = 2048  # 128 ms
AUDIO_HOP = 512  # 32 ms: a trim by any amount is at most 16 ms off the nearest hop
AUDIO_BANDS = np.geomspace(300.0, 4000.0, 22)  # 21 bands -> 20 bits per hop
QUIET_RMS = 10.0  # int16 RMS in the bands (about -70 dBFS): silence, no reliable signs
AUDIO_HOP_S = AUDIO_HOP / AUDIO_RATE
# H.264/HEVC decoders can skip frames nothing refers to (most B-frames): about half the decode CPU, and the
# thumbnails, blended from the frames either side, move by at most 2 pHash bits (measured). Other
# decoders treat the flag differently (an intra-only decoder could skip everything), so only these two.
_SKIP_NONREF_CODECS = {"h264", "hevc"}


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT = _dct_matrix(THUMB)
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
_HANN = np.hanning(AUDIO_WINDOW)
# Parseval for a one-sided spectrum of a Hann-windowed frame: band power -> mean square of the samples.
_POWER_TO_MEAN_SQUARE = 2 / (AUDIO_WINDOW * float((_HANN**2).sum()))


@dataclass
class Fingerprint:
    frame_hashes: np.ndarray  # uint64 (n,): pHash per frame slot
    frame_colours: np.ndarray  # uint8 (n, GRID*GRID*3): mean RGB per cell
    frame_valid: np.ndarray  # bool (n,): slot decoded and not flat
    audio_codes: np.ndarray  # uint32 (m,): 20-bit sub-fingerprint per hop
    audio_valid: np.ndarray  # bool (m,): hop not quiet

    @property
    def num_valid_frames(self) -> int:
        return int(self.frame_valid.sum())

    @property
    def num_valid_hops(self) -> int:
        return int(self.audio_valid.sum())

    def to_bytes(self) -> bytes:
        n, m = len(self.frame_hashes), len(self.audio_codes)
        return b"".join(
            [
                struct.pack("<BII", FORMAT_VERSION, n, m),
                self.frame_hashes.astype("<u8").tobytes(),
                self.frame_colours.astype(np.uint8).tobytes(),
                np.packbits(self.frame_valid).tobytes(),
                self.audio_codes.astype("<u4").tobytes(),
                np.packbits(self.audio_valid).tobytes(),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        version, n, m = struct.unpack_from("<BII", data)
        if version != FORMAT_VERSION:
            raise ValueError(f"fingerprint format {version} is not {FORMAT_VERSION}: re-ingest the dataset")
        pos = struct.calcsize("<BII")

        def take(size: int) -> bytes:
            nonlocal pos
            pos += size
            return data[pos - size : pos]

        hashes = np.frombuffer(take(8 * n), "<u8").astype(np.uint64)
        colours = np.frombuffer(take(n * GRID * GRID * 3), np.uint8).reshape(n, GRID * GRID * 3)
        valid = np.unpackbits(np.frombuffer(take((n + 7) // 8), np.uint8))[:n].astype(bool)
        codes = np.frombuffer(take(4 * m), "<u4").astype(np.uint32)
        audio_valid = np.unpackbits(np.frombuffer(take((m + 7) // 8), np.uint8))[:m].astype(bool)
        return cls(hashes, colours, valid, codes, audio_valid)


def frame_signature(rgb: np.ndarray) -> tuple[int, np.ndarray, bool]:
    """(pHash, colour layout, informative) of one THUMB x THUMB RGB thumbnail."""
    pixels = np.asarray(rgb, dtype=np.float64)
    luma = pixels @ np.array([0.299, 0.587, 0.114])
    low = (_DCT @ luma @ _DCT.T)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])  # the DC term would only say "bright or dark"
    bits[0] = False
    cell = THUMB // GRID
    colours = pixels.reshape(GRID, cell, GRID, cell, 3).mean(axis=(1, 3)).round().astype(np.uint8).reshape(-1)
    return int((bits.astype(np.uint64) * _BIT_WEIGHTS).sum()), colours, bool(luma.std() >= FLAT_LUMA_STD)


def _frames_part(thumbs: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hashes = np.zeros(len(thumbs), np.uint64)
    colours = np.zeros((len(thumbs), GRID * GRID * 3), np.uint8)
    valid = np.zeros(len(thumbs), bool)
    for i, thumb in enumerate(thumbs):
        if thumb is not None:
            hashes[i], colours[i], valid[i] = frame_signature(thumb)
    return hashes, colours, valid


def audio_codes(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """20-bit sub-fingerprints (one per hop) and their validity, from int16 mono at AUDIO_RATE."""
    num = 1 + (len(pcm) - AUDIO_WINDOW) // AUDIO_HOP if len(pcm) >= AUDIO_WINDOW else 0
    if num < 2:
        return np.zeros(0, np.uint32), np.zeros(0, bool)
    idx = np.arange(AUDIO_WINDOW)[None, :] + AUDIO_HOP * np.arange(num)[:, None]
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)[idx] * _HANN, axis=1)) ** 2
    freqs = np.fft.rfftfreq(AUDIO_WINDOW, 1 / AUDIO_RATE)
    band_of = np.digitize(freqs, AUDIO_BANDS) - 1
    energies = np.stack([spectrum[:, band_of == b].sum(axis=1) for b in range(len(AUDIO_BANDS) - 1)], axis=1)
    diff = energies[:, :-1] - energies[:, 1:]
    bits = (diff[1:] - diff[:-1]) > 0  # hop n against hop n-1
    codes = (bits.astype(np.uint32) << np.arange(bits.shape[1], dtype=np.uint32)).sum(axis=1).astype(np.uint32)
    loud = np.sqrt(energies.sum(axis=1) * _POWER_TO_MEAN_SQUARE) >= QUIET_RMS
    return codes, loud[1:] & loud[:-1]


def frame_times(duration_s: float) -> list[float]:
    """The fixed fingerprint times inside the clip's first WINDOW_S seconds."""
    span = min(duration_s, WINDOW_S)
    return [(k + 0.5) * FRAME_STEP_S for k in range(int(span / FRAME_STEP_S + 1e-9))] or [0.0]


class _InterpolatedThumbnails:
    """Fed decoded frames in order; the thumbnail at each target time blends the frames either side of it.

    Blending makes a thumbnail change smoothly with the time offset, so a copy whose frames sit a few ms
    away (another frame rate, a container start offset, a trim between frames) gives nearly the same one.
    Times count from the first frame, which is where a trimmed or remuxed copy restarts too.
    """

    def __init__(self, targets: list[float]):
        self.targets, self.thumbs = targets, []
        self._first: float | None = None
        self._prev: tuple[float, av.VideoFrame] | None = None
        self._cache: tuple[float, np.ndarray] | None = None  # the last thumbnail made, by frame time
        self._reformatter = VideoReformatter()  # keeps its scaling context across frames (decode.py says why)

    @property
    def done(self) -> bool:
        return len(self.thumbs) == len(self.targets)

    def _thumb(self, t: float, frame: av.VideoFrame) -> np.ndarray:
        # Only frames next to a target are scaled down: converting every frame would cost as much as decoding.
        if self._cache is None or self._cache[0] != t:
            thumb = self._reformatter.reformat(frame, width=THUMB, height=THUMB, format="rgb24")
            self._cache = (t, thumb.to_ndarray().astype(np.float32))
        return self._cache[1]

    def feed(self, frame: av.VideoFrame, t: float) -> None:
        self._first = t if self._first is None else self._first
        t -= self._first
        while not self.done and self.targets[len(self.thumbs)] <= t:
            target = self.targets[len(self.thumbs)]
            if self._prev is None or t <= self._prev[0]:
                self.thumbs.append(self._thumb(t, frame))
            else:
                weight = (target - self._prev[0]) / (t - self._prev[0])
                self.thumbs.append((1 - weight) * self._thumb(*self._prev) + weight * self._thumb(t, frame))
        self._prev = (t, frame)

    def finish(self) -> list[np.ndarray | None]:
        """One thumbnail per target: past the last frame, the last frame; None when nothing decoded."""
        last = self._thumb(*self._prev) if self._prev is not None else None
        return self.thumbs + [last] * (len(self.targets) - len(self.thumbs))


def fingerprint_media(url: str, duration_s: float, with_video: bool, with_audio: bool) -> Fingerprint:
    """Fingerprint the first WINDOW_S seconds of a video/audio file in one demux pass."""
    with av.open(url) as container:
        vstream = container.streams.video[0] if with_video and container.streams.video else None
        astream = container.streams.audio[0] if with_audio and container.streams.audio else None
        thumbs = _InterpolatedThumbnails(frame_times(duration_s or WINDOW_S)) if vstream else None
        # One-second output frames: the same samples, fewer Python calls (decode.py says why); flushed below.
        resampler = None
        if astream is not None:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE, frame_size=AUDIO_RATE)
        if vstream is not None:
            vstream.codec_context.thread_count = 1  # no CPU spent on frame threads; workers parallelise
            if vstream.codec_context.name in _SKIP_NONREF_CODECS:
                vstream.codec_context.skip_frame = "NONREF"
        pcm: list[np.ndarray] = []
        num_samples, max_samples = 0, int(WINDOW_S * AUDIO_RATE)
        for packet in container.demux(*[s for s in (vstream, astream) if s is not None]):
            if packet.size == 0 and packet.buffer_ptr:
                continue  # a "repeat the previous frame" packet, skipped as in decode.py
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    if frame.time is not None and not thumbs.done:
                        thumbs.feed(frame, float(frame.time))
                elif num_samples < max_samples:
                    for out in resampler.resample(frame):
                        pcm.append(out.to_ndarray().reshape(-1))
                        num_samples += pcm[-1].size
            if (thumbs is None or thumbs.done) and (resampler is None or num_samples >= max_samples):
                break
        if resampler is not None and num_samples < max_samples:  # the last, partial output frame
            pcm.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    frames = _frames_part(thumbs.finish()) if thumbs is not None else _frames_part([])
    samples = np.concatenate(pcm)[:max_samples] if pcm else np.zeros(0, np.int16)
    return Fingerprint(*frames, *audio_codes(samples))


def fingerprint_image(url: str) -> Fingerprint:
    with Image.open(url) as img:
        thumb = np.asarray(img.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX))
    return Fingerprint(*_frames_part([thumb]), np.zeros(0, np.uint32), np.zeros(0, bool))
