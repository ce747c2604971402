"""A copy of an ingested dataset with the model report's frame sizes, for throughput benchmarks.

    frames = write_paper_frame_dataset(Path("work/datasets/demo"), Path("/tmp/paper"), seq_length=4096)

The demo corpus is laptop scale (16-64 patches per frame, 4-16 frames per clip); REFERENCE.md's recipe
samples 576-5832 patches per frame and 16+ frames per clip. This writes the same samples (same text,
audio, questions and labels) with synthesised pictures: every frame upscaled (bilinear) to a patch grid
of the paper's range, and every clip looped to `frames_per_clip` frames at 2 fps (a frame pair per
second of the 1-second layout). Images take grids across the whole range; a clip takes the largest grid
of the range whose vision tokens (frame pairs x patches / merge) still fit the sequence with room for its
text and audio, since run_stage skips samples longer than the sequence. What was written is returned.
"""

from __future__ import annotations

import collections
import io
import json
import shutil
from pathlib import Path

import webdataset as wds
from PIL import Image

# (rows, columns) of 14-pixel patches: 576, 1296, 2304, 3600, 5832 patches, the paper's range end to end;
# columns are even because the projector merges horizontally adjacent patches in pairs.
PAPER_GRIDS = ((24, 24), (36, 36), (48, 48), (60, 60), (81, 72))
# Images take the grids in this order, both ends of the range first: a small dataset still spans it.
IMAGE_GRID_ORDER = ((81, 72), (24, 24), (48, 48), (36, 36), (60, 60))
TEXT_AND_AUDIO_ROOM = 512  # positions a clip keeps for its prompt, question, answer and audio steps


def _grid_for_clip(num_frames: int, seq_length: int, patch_merge: int) -> tuple[int, int]:
    fitting = [g for g in PAPER_GRIDS
               if num_frames // 2 * g[0] * g[1] // patch_merge + TEXT_AND_AUDIO_ROOM <= seq_length]  # fmt: skip
    if not fitting:
        smallest = PAPER_GRIDS[0][0] * PAPER_GRIDS[0][1]
        need = num_frames // 2 * smallest // patch_merge + TEXT_AND_AUDIO_ROOM
        raise ValueError(f"a {num_frames}-frame clip at {smallest} patches per frame needs a sequence of at least "
                         f"{need} positions; the benchmark's paper-frames sequence length is {seq_length}")  # fmt: skip
    return fitting[-1]


def _jpeg(frame: bytes, grid: tuple[int, int], patch_size: int) -> bytes:
    picture = Image.open(io.BytesIO(frame)).convert("RGB")
    picture = picture.resize((grid[1] * patch_size, grid[0] * patch_size), Image.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_paper_frame_dataset(source: Path, out: Path, seq_length: int, frames_per_clip: int = 16,
                              patch_size: int = 14, patch_merge: int = 2) -> dict:  # fmt: skip
    """Write OUT/shards/*.tar and OUT/stats.json from SOURCE's shards with paper-sized frames; returns the
    patches per frame of the training split's images and clips, the frames per clip and the counts written."""
    if frames_per_clip < 2 or frames_per_clip % 2:
        raise ValueError(f"frames_per_clip must be even and >= 2 (frame pairs), got {frames_per_clip}")
    shards = sorted((Path(source) / "shards").glob("*.tar"))
    if not shards:
        raise ValueError(f"{source}/shards has no .tar shards: ingest the dataset first (`omnistage ingest`)")
    clip_grid = _grid_for_clip(frames_per_clip, seq_length, patch_merge)
    (Path(out) / "shards").mkdir(parents=True, exist_ok=True)
    image_patches, clip_patches = collections.defaultdict(set), collections.defaultdict(set)  # by split
    counts, image_index = {"images": 0, "clips": 0, "other": 0}, 0
    for shard in shards:
        with wds.TarWriter(str(Path(out) / "shards" / shard.name)) as writer:
            for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
                frames = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
                meta = json.loads(sample["json"])
                kept = {k: v for k, v in sample.items() if k not in frames and not k.startswith("__url")}
                if frames and meta.get("modality") == "image":
                    grid = IMAGE_GRID_ORDER[image_index % len(IMAGE_GRID_ORDER)]
                    image_index += 1
                    kept[frames[0]] = _jpeg(sample[frames[0]], grid, patch_size)
                    image_patches[meta.get("split", "")].add(grid[0] * grid[1])
                    counts["images"] += 1
                elif frames:
                    for i in range(frames_per_clip):  # the clip looped to the paper's frame count
                        kept[f"f{i:03d}.jpg"] = _jpeg(sample[frames[i % len(frames)]], clip_grid, patch_size)
                    meta["layout"] = [{"second": s, "start_s": float(s), "end_s": float(s + 1), "audio": None,
                                       "frames": [2 * s, 2 * s + 1]} for s in range(frames_per_clip // 2)]  # fmt: skip
                    kept["json"] = json.dumps(meta).encode()
                    clip_patches[meta.get("split", "")].add(clip_grid[0] * clip_grid[1])
                    counts["clips"] += 1
                else:
                    counts["other"] += 1
                writer.write(kept)
    stats = json.loads((Path(source) / "stats.json").read_text())
    stats.update(shards=len(shards), synthesised_from=str(source))
    (Path(out) / "stats.json").write_text(json.dumps(stats, indent=2))
    if (Path(source) / "tokenizer.json").exists():
        shutil.copy(Path(source) / "tokenizer.json", Path(out) / "tokenizer.json")
    return {"train_image_patches_per_frame": sorted(image_patches["train"]),
            "train_clip_patches_per_frame": sorted(clip_patches["train"]), "frames_per_clip": frames_per_clip,
            **counts}  # fmt: skip
