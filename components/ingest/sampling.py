"""Pure functions that decide which frames to take and at what size (REFERENCE.md sections 3 and 5).

They depend only on numbers, so the same rule serves ingestion, the model's data loader and the tests.
"""

from __future__ import annotations

import math

from components.specs.dataset import FrameSamplingSpec, ResizeSpec


def num_frames_for_duration(duration_s: float, spec: FrameSamplingSpec) -> int:
    """How many frames a clip of this duration gets.

    Default `fps`; short clips are densified up to `min_frames` but never beyond `max_fps`; long clips are
    capped at `max_frames`. Counts above one are made even because the ViT patches frames in pairs
    (temporal patch 2), so an odd count would waste half a temporal unit.
    """
    if duration_s <= 0:
        return 1
    num = max(1, round(duration_s * spec.fps))
    if num < spec.min_frames:
        num = max(num, min(spec.min_frames, math.floor(duration_s * spec.max_fps)))
    num = min(num, spec.max_frames)
    if num > 1 and num % 2:
        num = num + 1 if num + 1 <= spec.max_frames else num - 1
    return num


def sample_frames_for_duration(duration_s: float, spec: FrameSamplingSpec) -> list[float]:
    """Timestamps (seconds) of the frames to sample: uniform, each at the centre of its interval."""
    num = num_frames_for_duration(duration_s, spec)
    step = max(duration_s, 0.0) / num
    return [round((i + 0.5) * step, 6) for i in range(num)]


def native_resolution(width: int, height: int, spec: ResizeSpec) -> tuple[int, int]:
    """The (width, height) a frame is resized to before the ViT.

    Inside the patch-count range the frame is only nudged so that the height is a multiple of the patch
    size and the width a multiple of two patches (the projector merges horizontal pairs). Outside it, the
    frame is rescaled with its aspect ratio kept until the count falls inside.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    p = spec.patch_size
    patches = (width / p) * (height / p)
    if patches > spec.max_patches:
        scale = math.sqrt(spec.max_patches / patches)
        new_h = max(p, math.floor(height * scale / p) * p)
        new_w = max(2 * p, math.floor(width * scale / (2 * p)) * 2 * p)
    elif patches < spec.min_patches:
        scale = math.sqrt(spec.min_patches / patches)
        new_h = math.ceil(height * scale / p) * p
        new_w = math.ceil(width * scale / (2 * p)) * 2 * p
    else:
        new_h = max(p, round(height / p) * p)
        new_w = max(2 * p, round(width / (2 * p)) * 2 * p)
    return new_w, new_h
