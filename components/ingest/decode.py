"""Decode one media file into the sampled frames and a 16 kHz mono audio track, in a single pass.

Video and audio packets are demuxed together so each file is read once; only the frames that the
sampling rule picks are converted to RGB and resized (the conversion, not the decode, is what the floor
benchmark does not pay for). Errors become `DecodeError` with a message fit for the quarantine list.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from components.object_storage import open_media

# A stream that ends this much before its declared duration was cut short (truncated upload, bad disk).
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE_FRACTION = 0.1
# Decoders that honour skip_frame=NONREF by dropping only frames no other frame predicts from (B-frames
# outside a pyramid): the rest decode exactly as before. Others treat the flag differently (an intra-only
# decoder could drop every frame), so only these two.
SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})
# Skip only when the source is at least this many times denser than the targets: encoders leave at most 3
# unreferenced frames in a row (x264's default b-frames), so the nearest kept frame stays within 2 source
# frames of a target and well inside half the spacing between targets (no two targets share a frame
# because of the skip).
_SKIP_NONREF_MIN_DENSITY = 4.0


class DecodeError(Exception):
    """The file's content cannot be decoded as declared; the message says where and why."""


@dataclass
class DecodedMedia:
    frames: list[np.ndarray]  # RGB uint8, one per requested timestamp
    frame_pts: list[float]  # the decoded frame time each sampled frame came from
    audio: np.ndarray | None  # int16 mono at the requested rate


class _NearestFramePicker:
    """Fed decoded frames in order; keeps, for each target time, the nearest frame (converted once)."""

    def __init__(self, targets: list[float], size: tuple[int, int]):
        self.targets, self.size = targets, size
        self.frames: list[np.ndarray] = []
        self.pts: list[float] = []
        self.last_t: float | None = None
        self._prev: tuple[float, av.VideoFrame] | None = None
        self._converted: tuple[float, np.ndarray] | None = None
        # One reformatter for the whole stream keeps its scaling context: a fresh one per frame (what
        # `frame.reformat` does) rebuilds the filters each time, 3x the cost of the conversion itself.
        self._reformatter = VideoReformatter()

    def _pick(self, t: float, frame: av.VideoFrame) -> None:
        if self._converted is None or self._converted[0] != t:
            rgb = self._reformatter.reformat(frame, width=self.size[0], height=self.size[1], format="rgb24")
            self._converted = (t, rgb.to_ndarray())
        self.frames.append(self._converted[1])
        self.pts.append(t)

    def feed(self, frame: av.VideoFrame, t: float) -> None:
        while len(self.frames) < len(self.targets) and self.targets[len(self.frames)] <= t:
            target = self.targets[len(self.frames)]
            if self._prev is not None and target - self._prev[0] < t - target:
                self._pick(*self._prev)
            else:
                self._pick(t, frame)
        self._prev, self.last_t = (t, frame), t

    def finish(self) -> None:
        while self._prev is not None and len(self.frames) < len(self.targets):
            self._pick(*self._prev)


def can_skip_unreferenced(codec: str, source_fps: float | None, frame_times: list[float]) -> bool:
    """Whether the frames nearest `frame_times` can be found among the referenced frames alone (see
    `_SKIP_NONREF_MIN_DENSITY`): an H.264/HEVC source much denser than the sampling."""
    if codec not in SKIP_NONREF_CODECS or not source_fps or len(frame_times) < 2:
        return False
    spacing = min(b - a for a, b in zip(frame_times, frame_times[1:]))
    return spacing * source_fps >= _SKIP_NONREF_MIN_DENSITY


def decode_media(
    url: str,
    frame_times: list[float] | None,
    frame_size: tuple[int, int] | None,
    audio_rate: int | None,
    expected_duration_s: float | None,
    skip_unreferenced: bool = False,
) -> DecodedMedia:
    """Decode the frames nearest to `frame_times` (resized to `frame_size`) and/or the audio track of
    `url` (a local path, or an object in storage read through fsspec).

    `skip_unreferenced`: leave undecoded the video frames no other frame refers to, where
    `can_skip_unreferenced` allows it (about half the decode work of an H.264 stream with B-frames); the
    picked frames are then the nearest referenced ones, and `frame_pts` says which."""
    try:
        with open_media(url) as source:
            return _decode_media(source, frame_times, frame_size, audio_rate, expected_duration_s, skip_unreferenced)
    except OSError as exc:  # fsspec could not open or read the object; PyAV's own errors are handled inside
        if isinstance(exc, av.FFmpegError):
            raise
        raise DecodeError(f"unreadable file: {exc}") from exc


def _decode_media(
    source,
    frame_times: list[float] | None,
    frame_size,
    audio_rate: int | None,
    expected_duration_s: float | None,
    skip_unreferenced: bool,
) -> DecodedMedia:
    try:
        container = av.open(source)
    except av.FFmpegError as exc:
        raise DecodeError(f"{_io_prefix(exc)}cannot open for decoding: {exc}") from exc
    with container:
        vstream = container.streams.video[0] if frame_times and container.streams.video else None
        astream = container.streams.audio[0] if audio_rate and container.streams.audio else None
        if vstream is None and astream is None:
            raise DecodeError("no stream to decode")
        if vstream is not None:
            # Frame threads add CPU per decoded second; parallelism comes from sample-level workers.
            threads = int(os.environ.get("OMNISTAGE_DECODE_THREADS", "1"))
            vstream.codec_context.thread_count = threads
            if threads != 1:
                vstream.thread_type = "AUTO"
            rate = float(vstream.average_rate) if vstream.average_rate else None
            if skip_unreferenced and can_skip_unreferenced(vstream.codec_context.name, rate, frame_times):
                vstream.codec_context.skip_frame = "NONREF"
            picker = _NearestFramePicker(frame_times, frame_size)
        # One-second output frames: the same samples as frame-by-frame output, with ~40x fewer Python calls
        # to collect them (an AAC stream decodes into ~43 frames per second).
        resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=audio_rate, frame_size=audio_rate) if astream else None
        )
        pcm: list[np.ndarray] = []
        last_t = 0.0
        # Only the chosen streams are demuxed: data, subtitle and attachment streams never reach a decoder.
        streams = [s for s in (vstream, astream) if s is not None]
        try:
            for packet in container.demux(*streams):
                # A zero-size packet with a buffer means "repeat the previous frame" (Theora duplicate
                # frames, frames a capture dropped): libavcodec rejects it with EINVAL, ffmpeg skips it,
                # and so do we. The flush packets demux() ends with have no buffer and are decoded.
                if packet.size == 0 and packet.buffer_ptr:
                    continue
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        if frame.time is not None:
                            t = float(frame.time)
                            last_t = max(last_t, t)
                            picker.feed(frame, t)
                        continue
                    if frame.pts is not None:  # a float product: `frame.time` builds a Fraction per audio frame
                        last_t = max(last_t, frame.pts * float(frame.time_base))
                    pcm.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        except av.FFmpegError as exc:
            raise DecodeError(f"{_io_prefix(exc)}decode error at {last_t:.2f} s: {exc}") from exc
    frames: list[np.ndarray] = []
    pts: list[float] = []
    if vstream is not None:
        picker.finish()
        if picker.last_t is None:
            raise DecodeError("video stream holds no decodable frame")
        frames, pts = picker.frames, picker.pts
        _check_not_truncated(picker.last_t, expected_duration_s, "video")
    audio = None
    if resampler is not None:
        pcm.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        audio = np.concatenate(pcm).astype(np.int16) if pcm else np.zeros(0, np.int16)
        if audio.size == 0:
            raise DecodeError("audio stream holds no decodable samples")
        if vstream is None:
            _check_not_truncated(audio.size / audio_rate, expected_duration_s, "audio")
    return DecodedMedia(frames=frames, frame_pts=pts, audio=audio)


def _io_prefix(exc: av.FFmpegError) -> str:
    """PyAV raises OSError subclasses for I/O (missing file, EIO, timeouts) and ValueError ones for bad
    data; the reason of an I/O failure starts like the probe's, so a retry knows it may pass next time."""
    return "unreadable file: " if isinstance(exc, OSError) else ""


def _check_not_truncated(reached_s: float, expected_s: float | None, what: str) -> None:
    if not expected_s:
        return
    tolerance = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * expected_s)
    if reached_s < expected_s - tolerance:
        raise DecodeError(
            f"decode error mid-file: {what} stream ends at {reached_s:.2f} s of a declared {expected_s:.2f} s "
            "(file truncated or corrupt)"
        )


def decode_image(url: str, size_rule) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a still image to RGB and resize it by `size_rule(width, height) -> (w, h)`."""
    try:
        with open_media(url) as source, Image.open(source) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot decode image: {exc}") from exc
    size = size_rule(*rgb.size)
    return np.asarray(rgb.resize(size, Image.Resampling.BICUBIC)), size


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_wav(pcm: np.ndarray, rate: int) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()
