"""Probe one input file: content hash, what ffprobe says about its streams and, when asked, its
perceptual fingerprint (components/ingest/fingerprint.py) for near-duplicate matching.

A file that cannot be probed is not an exception here: the result carries a `reason` and ingestion sends
the file to quarantine, so one bad file never stops a batch.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass

import av
import ffmpeg
import fsspec

from components.ingest.discover import InputFile
from components.ingest.fingerprint import fingerprint_image, fingerprint_media
from components.object_storage import local_copy
from components.specs.dataset import Modality

TEXT_SUFFIXES = (".txt", ".md")
_HASH_BLOCK = 1 << 20
log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    source: str
    path: str
    relpath: str
    sha256: str | None = None
    size_bytes: int = 0
    modality: str | None = None  # what the file turned out to be: video, audio, image or text
    container: str | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    reason: str | None = None  # set when the file must be quarantined
    fingerprint: bytes | None = None  # Fingerprint.to_bytes() of video, audio and images, when asked for

    def as_row(self) -> dict:
        return asdict(self)


def sha256_of(url: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with fsspec.open(url, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _ffprobe_error(exc: ffmpeg.Error) -> str:
    lines = [ln.strip() for ln in (exc.stderr or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "ffprobe failed without a message"


def _frame_rate(stream: dict) -> float | None:
    num, _, den = (stream.get("avg_frame_rate") or "0/0").partition("/")
    try:
        return round(float(num) / float(den), 4) if float(den) else None
    except ValueError:
        return None


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_still_image(fmt: dict, video: dict) -> bool:
    name = fmt.get("format_name", "")
    return name.endswith("_pipe") or name == "image2"


def probe_input(item: InputFile, with_fingerprint: bool = False) -> ProbeResult:
    """Probe `item`; an object in storage is downloaded once and probed from that local copy."""
    result = ProbeResult(source=item.source, path=item.url, relpath=item.relpath)
    try:
        with local_copy(item.url) as local:
            return _probe_local(item, local, result, with_fingerprint)
    except OSError as exc:  # the download of an object in storage
        result.reason = item.quarantine_reason or f"unreadable file: {exc}"
        return result


def _probe_local(item: InputFile, local: str, result: ProbeResult, with_fingerprint: bool) -> ProbeResult:
    """The probe of `item` whose bytes are at the local path `local` (`item.url` itself when local)."""
    try:
        result.sha256, result.size_bytes = sha256_of(local)
    except OSError as exc:
        result.reason = item.quarantine_reason or f"unreadable file: {exc}"
        return result
    if item.quarantine_reason:
        result.reason = item.quarantine_reason
        return result
    if result.size_bytes == 0:
        result.reason = "empty file (0 bytes)"
        return result
    if item.url.lower().endswith(TEXT_SUFFIXES):
        return _probe_text(item, local, result)
    try:
        info = ffmpeg.probe(local)
    except ffmpeg.Error as exc:
        result.reason = f"not a media file ffprobe can read: {_ffprobe_error(exc)}"
        return result
    fmt = info.get("format", {})
    streams = info.get("streams", [])
    video = next(
        (s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    result.container = fmt.get("format_name")
    result.duration_s = _float(fmt.get("duration"))
    if video is not None:
        result.video_codec = video.get("codec_name", "unknown")
        result.width, result.height = video.get("width"), video.get("height")
        result.fps = _frame_rate(video)
    if audio is not None:
        result.audio_codec = audio.get("codec_name", "unknown")
        result.sample_rate = int(audio["sample_rate"]) if audio.get("sample_rate") else None
        result.channels = audio.get("channels")
    if video is not None and _is_still_image(fmt, video):
        result.modality, result.duration_s = Modality.IMAGE.value, 0.0
    elif video is not None:
        result.modality = Modality.VIDEO.value
    elif audio is not None:
        result.modality = Modality.AUDIO.value
    else:
        result.reason = "no decodable audio or video stream"
        return result
    result.reason = _modality_mismatch(item.modality, result)
    if with_fingerprint and result.reason is None:
        result.fingerprint = _fingerprint(result, local)
    return result


def _fingerprint(result: ProbeResult, local: str) -> bytes | None:
    """None when the content does not decode: the decode phase then quarantines it with the reason."""
    try:
        if result.modality == Modality.IMAGE.value:
            return fingerprint_image(local).to_bytes()
        video = result.modality == Modality.VIDEO.value
        return fingerprint_media(local, result.duration_s or 0.0, video, True).to_bytes()
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.info("no fingerprint for %s: %s", result.path, exc)
        return None


def _probe_text(item: InputFile, local: str, result: ProbeResult) -> ProbeResult:
    try:
        with fsspec.open(local, "rb") as fh:
            fh.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        result.reason = f"text file is not valid UTF-8: {exc}"
        return result
    result.modality = Modality.TEXT.value
    result.reason = _modality_mismatch(item.modality, result)
    return result


def _modality_mismatch(wanted: Modality, result: ProbeResult) -> str | None:
    if wanted is Modality.AUTO or wanted.value == result.modality:
        return None
    if wanted is Modality.VIDEO and result.modality == Modality.AUDIO.value:
        return "audio-only file where the source requires video"
    return f"file holds {result.modality}, but the source requires {wanted.value}"
