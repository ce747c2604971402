"""Turn one probed input into the files of one WebDataset sample.

A sample is `KEY.json` (labels, probe facts, sampled frame times and the 1-second layout) plus, by modality,
`KEY.fNNN.jpg` frames, `KEY.wav` (16 kHz mono) and `KEY.txt`. Keys come from the content hash, so the same
bytes always produce the same sample wherever they were found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec

from components.ingest.decode import decode_image, decode_media, encode_jpeg, encode_wav
from components.ingest.layout import build_chunk_layout
from components.ingest.probe import ProbeResult
from components.ingest.sampling import native_resolution, sample_frames_for_duration
from components.specs.dataset import DatasetSpec

KEY_HEX_CHARS = 24


def sample_key(sha256: str) -> str:
    return sha256[:KEY_HEX_CHARS]


@dataclass
class BuiltSample:
    key: str
    files: list[tuple[str, bytes]]  # (tar member name, content), in a fixed order
    num_frames: int


def estimate_sample_bytes(probe: ProbeResult, spec: DatasetSpec) -> int:
    """A size estimate from probe facts alone, so shards can be planned before anything is decoded."""
    total = 2048
    if probe.modality in ("video", "image"):
        w, h = native_resolution(probe.width or 1, probe.height or 1, spec.resize)
        frames = (
            1
            if probe.modality == "image"
            else len(sample_frames_for_duration(probe.duration_s or 0, spec.frame_sampling))
        )
        total += frames * int(w * h * 3 * 0.08)  # JPEG q90 of natural video: roughly 8% of raw RGB
    if probe.audio_codec and probe.modality in ("video", "audio"):
        total += int((probe.duration_s or 0) * spec.audio.sample_rate * 2)
    if probe.modality == "text":
        total += probe.size_bytes
    return total


def build_sample(
    probe: ProbeResult, labels: dict, split: str, task_family: str | None, spec: DatasetSpec
) -> BuiltSample:
    """Decode and lay out one input. Raises DecodeError when the content cannot be decoded as probed."""
    key = sample_key(probe.sha256)
    meta = {
        "key": key,
        "sha256": probe.sha256,
        "source": probe.source,
        "relpath": probe.relpath,
        "modality": probe.modality,
        "task_family": task_family or labels.get("task_family"),
        "split": split,
        "labels": {k: v for k, v in labels.items() if k != spec.split.label_field},
        "duration_s": probe.duration_s,
    }
    files: list[tuple[str, bytes]] = []
    num_frames = 0
    if probe.modality == "text":
        with fsspec.open(probe.path, "rb") as fh:
            files.append((f"{key}.txt", fh.read()))
    elif probe.modality == "image":
        frame, (w, h) = decode_image(probe.path, lambda w0, h0: native_resolution(w0, h0, spec.resize))
        files.append((f"{key}.f000.jpg", encode_jpeg(frame, spec.jpeg_quality)))
        meta.update(width=w, height=h, frame_times=[0.0])
        num_frames = 1
    else:
        wants_video = probe.modality == "video"
        duration = probe.duration_s or 0.0
        times = sample_frames_for_duration(duration, spec.frame_sampling) if wants_video else None
        size = native_resolution(probe.width, probe.height, spec.resize) if wants_video else None
        rate = spec.audio.sample_rate if probe.audio_codec else None
        skip = spec.frame_sampling.skip_unreferenced_frames
        decoded = decode_media(probe.path, times, size, rate, duration, skip_unreferenced=skip)
        for index, frame in enumerate(decoded.frames):
            files.append((f"{key}.f{index:03d}.jpg", encode_jpeg(frame, spec.jpeg_quality)))
        if decoded.audio is not None:
            files.append((f"{key}.wav", encode_wav(decoded.audio, rate)))
        num_frames = len(decoded.frames)
        meta.update(
            frame_times=times or [],
            frame_source_times=[round(t, 6) for t in decoded.frame_pts],
            audio_sample_rate=rate,
            num_audio_samples=int(decoded.audio.size) if decoded.audio is not None else 0,
            layout=build_chunk_layout(
                duration,
                times or [],
                int(decoded.audio.size) if decoded.audio is not None else None,
                spec.audio.sample_rate,
                spec.audio.chunk_seconds,
            ),
        )
        if size:
            meta.update(width=size[0], height=size[1])
    files.insert(0, (f"{key}.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()))
    return BuiltSample(key=key, files=files, num_frames=num_frames)
