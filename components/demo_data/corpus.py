"""Write the demo corpus: every task family, train and eval splits from disjoint parameter partitions.

    write_demo_corpus(Path("work/raw/demo"), seed=0, size="small")

Layout: `OUT/<family>/<split>/<family>-<split>-NNNN.<ext>` with a `.labels.json` sidecar each, and
`OUT/corpus.json` listing every item. The same seed and size give the same files.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from components.demo_data import families as fam
from components.demo_data.synth import require_tools
from components.progress import track
from components.specs.dataset import SIDECAR_SUFFIX

EVAL_PARTITION = 5  # a parameter set belongs to eval when its hash is 0 modulo this


@dataclass(frozen=True)
class Family:
    name: str
    draw: Callable[[random.Random], object]
    render: Callable[[object, Path, Path], tuple[Path, dict]]


FAMILIES = [
    Family("video_qa", fam.video_qa_params, fam.render_video_qa),
    Family("av_qa", fam.av_qa_params, fam.render_av_qa),
    Family("spoken_qa", fam.spoken_qa_params, fam.render_spoken_qa),
    Family("speech", fam.speech_params, fam.render_speech),
    Family("image_caption", fam.image_params, fam.render_image),
    Family("text", fam.text_params, fam.render_text),
]

# (train, eval) items per family
SIZES = {
    "tiny": {
        "video_qa": (3, 1),
        "av_qa": (2, 2),
        "spoken_qa": (2, 1),
        "speech": (2, 1),
        "image_caption": (2, 1),
        "text": (2, 1),
    },  # for tests
    "small": {
        "video_qa": (16, 8),
        "av_qa": (12, 8),
        "spoken_qa": (24, 12),
        "speech": (16, 8),
        "image_caption": (160, 40),  # cheap to make; enough for the tiny model to learn colours in minutes
        "text": (16, 4),
    },
    "medium": {
        "video_qa": (80, 24),
        "av_qa": (80, 24),
        "spoken_qa": (120, 30),
        "speech": (80, 20),
        "image_caption": (120, 30),
        "text": (60, 10),
    },
}


def in_partition(partition_key: str, split: str) -> bool:
    bucket = int(hashlib.sha256(partition_key.encode()).hexdigest()[:8], 16) % EVAL_PARTITION
    return (bucket == 0) == (split == "eval")


def _draw(family: Family, seed: int, split: str, index: int):
    rng = random.Random(f"{seed}:{family.name}:{split}:{index}")
    if family.name == "video_qa" and split == "train" and index == 0:
        draw = lambda r: fam.video_qa_params(r, long_clip=True)  # noqa: E731 - one 5-minute clip per corpus
    else:
        draw = family.draw
    for _ in range(1000):
        params = draw(rng)
        if in_partition(params.partition_key, split):
            return params
    raise RuntimeError(f"{family.name}: no parameters fall in the {split} partition")  # internal invariant


def existing_corpus(out: Path, seed: int, size: str) -> dict | None:
    """The summary of a complete corpus already written with this seed and size, else None."""
    index = Path(out) / "corpus.json"
    if not index.is_file():
        return None
    summary = json.loads(index.read_text())
    complete = all((Path(out) / item["file"]).is_file() for item in summary.get("items", []))
    same = (
        summary.get("seed") == seed
        and summary.get("size") == size
        and summary.get("num_files") == sum(train + held_out for train, held_out in SIZES[size].values())
    )  # a size whose counts changed since (a newer omnistage) is written again
    return summary if complete and same else None


def write_demo_corpus(out: Path, seed: int = 0, size: str = "small", workers: int = 2, force: bool = False) -> dict:
    """Write the corpus; an identical complete corpus already at `out` is kept as is (unless `force`)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    out = Path(out)
    if not force and (summary := existing_corpus(out, seed, size)):
        return summary | {"reused": True}
    require_tools("ffmpeg", "espeak-ng")
    jobs = []
    for family in FAMILIES:
        for split, count in zip(("train", "eval"), SIZES[size][family.name]):
            folder = out / family.name / split
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                jobs.append(
                    (family, split, folder / f"{family.name}-{split}-{index:04d}", _draw(family, seed, split, index))
                )
    tmp = Path(tempfile.mkdtemp(prefix="omnistage-demo-"))
    items = []

    def render(job):
        family, split, stem, params = job
        media, labels = family.render(params, stem, tmp)
        labels["split"] = split
        stem.with_suffix(SIDECAR_SUFFIX).write_text(json.dumps(labels, indent=1, sort_keys=True))
        return {"family": family.name, "split": split, "file": str(media.relative_to(out))}

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            items = list(track(pool.map(render, jobs), "demo corpus", total=len(jobs), unit="files"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"seed": seed, "size": size, "num_files": len(items), "items": sorted(items, key=lambda i: i["file"])}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1))
    return summary | {"reused": False}
