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


def _h264(path, fps: int, seconds: int):
    # x264's defaults: B-frames, some of which nothing refers to (what the skip leaves undecoded)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s=160x96:r={fps}:d={seconds}",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return str(path)


def _all_frame_times(path) -> list[float]:
    with av.open(path) as container:
        return sorted(float(f.time) for f in container.decode(container.streams.video[0]))


def test_skipping_unreferenced_frames_picks_referenced_frames_near_each_target(tmp_path):
    from components.ingest.decode import can_skip_unreferenced

    path = _h264(tmp_path / "b_frames.mp4", fps=25, seconds=6)
    targets = [round(0.25 + 0.5 * i, 6) for i in range(12)]  # 2 fps: 12.5x denser source
    everything = _all_frame_times(path)
    exact = decode_media(path, targets, (96, 64), None, 6.0)
    skipped = decode_media(path, targets, (96, 64), None, 6.0, skip_unreferenced=True)
    assert exact.frame_pts == [min(everything, key=lambda t, x=x: abs(t - x)) for x in targets]
    assert skipped.frame_pts != exact.frame_pts  # the setting changes what is decoded
    assert all(abs(s - x) <= 2 / 25 + 1e-6 for s, x in zip(skipped.frame_pts, targets))
    assert len(set(skipped.frame_pts)) == len(targets)
    # a source barely denser than the targets keeps every frame: skipping could merge two targets
    assert not can_skip_unreferenced("h264", 6.0, targets)
    assert can_skip_unreferenced("h264", 25.0, targets) and not can_skip_unreferenced("vp9", 25.0, targets)
    sparse = _h264(tmp_path / "sparse.mp4", fps=6, seconds=6)
    assert decode_media(sparse, targets, (96, 64), None, 6.0, skip_unreferenced=True).frame_pts == (
        decode_media(sparse, targets, (96, 64), None, 6.0).frame_pts
    )
