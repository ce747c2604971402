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
    draw: Callable[[random.Random, list[str]], object]  # (rng, the split's speakers) -> parameters
    render: Callable[[object, Path, Path], tuple[Path, dict]]
    # At most one item per partition key in a split: clips that share colour, direction, count and
    # background (or a sentence) look alike enough for ingestion's near-duplicate check to drop one.
    unique_keys: bool = False


FAMILIES = [
    Family("video_qa", fam.video_qa_params, fam.render_video_qa, unique_keys=True),
    Family("av_qa", fam.av_qa_params, fam.render_av_qa),
    Family("spoken_qa", fam.spoken_qa_params, fam.render_spoken_qa),
    Family("speech", fam.speech_params, fam.render_speech, unique_keys=True),
    Family("assistant_speech", fam.assistant_speech_params, fam.render_assistant_speech, unique_keys=True),
    Family("image_caption", fam.image_params, fam.render_image),
    Family("text", fam.text_params, fam.render_text),
]


@dataclass(frozen=True)
class CorpusSize:
    """(train, eval) items per family; `long_clip` adds one 5-minute video (no questions) that exercises
    ingestion's frame cap."""

    counts: dict[str, tuple[int, int]]
    long_clip: bool = False

    @property
    def num_files(self) -> int:
        return sum(train + held_out for train, held_out in self.counts.values()) + int(self.long_clip)


def _every_family(train: int, held_out: int) -> dict[str, tuple[int, int]]:
    return {family.name: (train, held_out) for family in FAMILIES}


SIZES = {
    "tiny": CorpusSize(_every_family(2, 1), long_clip=True),  # for tests: every family, both splits
    # `make run`: enough distinct items to learn from, and a 5% margin over 300/50 for the items that
    # ingestion's near-duplicate check may still drop (av_qa clips can share a 2-second segment)
    # omni_av and speech_output measure small effects (make run 4f6ed46: omni_av's difference from its blanked
    # control +0.069 [-0.049, +0.186] on 102 items): twice the eval clips halve their CIs' variance
    "small": CorpusSize(_every_family(315, 53) | {"av_qa": (315, 106), "assistant_speech": (315, 106)}),
    "medium": CorpusSize(_every_family(600, 100)),
}


def in_partition(partition_key: str, split: str) -> bool:
    bucket = int(hashlib.sha256(partition_key.encode()).hexdigest()[:8], 16) % EVAL_PARTITION
    return (bucket == 0) == (split == "eval")


def split_speakers(split: str) -> list[str]:
    """The espeak-ng speakers of a split: a hash partition, the same for every seed."""
    return [speaker for speaker in fam.SPEAKERS if in_partition(f"speaker:{speaker}", split)]


def draw_split(family: Family, seed: int, split: str, count: int) -> list:
    """`count` distinct parameter draws whose every partition key falls in `split`.

    Speech is drawn from the split's own speakers. Each index has its own random stream, so index i
    does not depend on how many draws earlier indices rejected; a draw equal to an earlier one (same
    content, `compare=False` fields aside) is redrawn."""
    drawn: list = []
    seen: set = set()
    speakers = split_speakers(split)
    for index in range(count):
        rng = random.Random(f"{seed}:{family.name}:{split}:{index}")
        for _ in range(10_000):
            params = family.draw(rng, speakers)
            keys = params.partition_keys
            fresh = params not in seen and not (family.unique_keys and keys in seen)
            if fresh and all(in_partition(key, split) for key in keys):
                break
        else:
            raise RuntimeError(f"{family.name}: no new parameters in the {split} partition")  # internal invariant
        seen.update((params, params.partition_keys))
        drawn.append(params)
    return drawn


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
        and summary.get("num_files") == SIZES[size].num_files
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
        for split, count in zip(("train", "eval"), SIZES[size].counts[family.name]):
            folder = out / family.name / split
            folder.mkdir(parents=True, exist_ok=True)
            for index, params in enumerate(draw_split(family, seed, split, count)):
                jobs.append((family, split, folder / f"{family.name}-{split}-{index:04d}", params))
    if SIZES[size].long_clip:  # first, so the slowest job does not finish last alone
        params = fam.video_qa_params(random.Random(f"{seed}:long"), [], long_clip=True)
        jobs.insert(0, (FAMILIES[0], "train", out / "video_qa" / "train" / "video_qa-train-long", params))
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
