"""Decoding what ffmpeg decodes: extra streams ignored, zero-size packets taken as repeated frames."""

from __future__ import annotations

import subprocess

import av
import pytest

from components.ingest.decode import decode_media


def _zero_size_packets(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size == 0 and p.buffer_ptr)


def test_zero_size_packet_is_a_repeated_frame_not_an_error(codec_media):
    folder, _ = codec_media
    ogv = folder / "theora_skeleton.ogv"
    assert _zero_size_packets(ogv) == 1  # the file holds what made decoding fail with EINVAL
    bare = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(ogv), "-f", "null", "-"], capture_output=True)
    assert bare.returncode == 0 and not bare.stderr  # ffmpeg itself decodes it cleanly
    decoded = decode_media(str(ogv), [0.0, 0.5, 0.9], (96, 64), 16000, 1.0)
    assert decoded.frame_pts == [0.0, 0.5, 0.9]
    assert [f.shape for f in decoded.frames] == [(64, 96, 3)] * 3
    assert abs(decoded.audio.size - 16000) < 400


@pytest.mark.parametrize(
    ("name", "extra_kinds"),
    [("theora_skeleton.ogv", {"data"}), ("h264_subtitle_attachment.mkv", {"subtitle", "attachment"})],
)
def test_streams_that_are_neither_video_nor_audio_are_ignored(codec_media, name, extra_kinds):
    path = codec_media[0] / name
    with av.open(str(path)) as container:
        assert extra_kinds <= {s.type for s in container.streams}
    decoded = decode_media(str(path), [0.0, 0.5], (96, 64), 16000, 1.0)
    assert len(decoded.frames) == 2 and decoded.audio.size > 15000
