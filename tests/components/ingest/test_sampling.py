import pytest

from components.ingest.layout import build_chunk_layout
from components.ingest.sampling import native_resolution, num_frames_for_duration, sample_frames_for_duration
from components.specs.dataset import FrameSamplingSpec, ResizeSpec

DEFAULT = FrameSamplingSpec()


@pytest.mark.parametrize(
    ("duration", "frames", "why"),
    [
        (60.0, 120, "default 2 fps"),
        (10.0, 20, "2 fps already above the 16-frame floor"),
        (5.6, 16, "short clip densified to 16 frames (2.9 fps <= 4 fps)"),
        (2.0, 8, "densification capped at 4 fps"),
        (1.2, 4, "capped at 4 fps: 4.8 -> 4"),
        (0.1, 1, "a sliver still yields one frame"),
        (300.0, 256, "long clip capped at 256 frames"),
        (127.9, 256, "just under the cap: 255.8 rounds to 256"),
    ],
)
def test_num_frames_for_duration(duration, frames, why):
    assert num_frames_for_duration(duration, DEFAULT) == frames, why


def test_timestamps_are_uniform_centred_and_inside_the_clip():
    times = sample_frames_for_duration(300.0, DEFAULT)
    assert len(times) == 256
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(abs(g - 300.0 / 256) for g in gaps) < 1e-5
    assert 0 < times[0] < times[-1] < 300.0


def test_sampling_is_configurable():
    spec = FrameSamplingSpec(fps=1.0, min_frames=4, max_fps=2.0, max_frames=10)
    assert num_frames_for_duration(100.0, spec) == 10
    assert num_frames_for_duration(3.0, spec) == 4
    assert sample_frames_for_duration(4.0, spec) == [0.5, 1.5, 2.5, 3.5]


def test_bad_sampling_spec_is_rejected():
    with pytest.raises(ValueError, match="max_fps"):
        FrameSamplingSpec(fps=5.0, max_fps=4.0)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 360), (644, 364)),  # in range: nudged to multiples of 28 (width) and 14 (height)
        ((448, 448), (448, 448)),  # already aligned
        ((3840, 2160), None),  # too many patches: scaled down into range
        ((160, 120), None),  # too few patches: scaled up into range
    ],
)
def test_native_resolution(size, expected):
    spec = ResizeSpec()
    w, h = native_resolution(*size, spec)
    if expected:
        assert (w, h) == expected
    assert w % 28 == 0 and h % 14 == 0
    assert spec.min_patches <= (w // 14) * (h // 14) <= spec.max_patches
    assert abs(w / h - size[0] / size[1]) < 0.1  # aspect ratio kept


def test_layout_puts_two_frames_and_one_second_of_audio_in_each_chunk():
    times = sample_frames_for_duration(10.0, DEFAULT)
    chunks = build_chunk_layout(10.0, times, 160000, 16000)
    assert len(chunks) == 10
    assert all(len(c["frames"]) == 2 for c in chunks)
    assert [c["audio"] for c in chunks[:2]] == [[0, 16000], [16000, 32000]]
    assert sorted(i for c in chunks for i in c["frames"]) == list(range(20))


def test_layout_of_a_partial_last_second_and_no_audio():
    chunks = build_chunk_layout(2.5, [0.5, 1.5, 2.25], None, 16000)
    assert [c["second"] for c in chunks] == [0, 1, 2]
    assert chunks[-1]["end_s"] == 2.5 and chunks[-1]["frames"] == [2]
    assert all(c["audio"] is None for c in chunks)
