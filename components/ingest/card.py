"""The dataset card: a markdown page with a duration histogram, modality counts and a contact sheet.

It is written next to the shards (`OUT/card/`) so a reviewer sees what was ingested without decoding
anything; the contact sheet shows the first sampled frame of up to 24 visual samples. `OUT` is an
`OutputStore`: the card is built in its staging folder and uploaded when the output is a URI.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from components.ingest.output_store import CARD, SHARDS, OutputStore
from components.specs.dataset import DatasetSpec

_THUMB = (160, 90)
_MAX_THUMBS = 24


def _duration_histogram(durations: list[float], target: Path) -> None:
    # A bare Figure renders with Agg on savefig: pyplot (its import alone ~0.5 CPU-s) manages GUI windows,
    # which a batch job never opens.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.subplots()
    ax.hist(durations or [0.0], bins=20, color="#3b7dd8")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("files")
    ax.set_title("Duration of accepted audio and video")
    fig.tight_layout()
    fig.savefig(target, metadata={"Software": None})


def _contact_sheet(store: OutputStore, rows: list[dict], target: Path) -> int:
    wanted = {r["key"]: r["shard"] for r in rows if r["num_frames"] and r["modality"] in ("video", "image")}
    keys = sorted(wanted)[:_MAX_THUMBS]
    thumbs: list[Image.Image] = []
    by_shard: dict[str, list[str]] = {}
    for key in keys:
        by_shard.setdefault(wanted[key], []).append(key)
    for shard, shard_keys in sorted(by_shard.items()):
        names = {f"{k}.f000.jpg" for k in shard_keys}
        with store.open(f"{SHARDS}/{shard}") as fh, tarfile.open(fileobj=fh) as tar:
            for member in tar:
                if member.name in names:
                    img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                    img.thumbnail(_THUMB)
                    thumbs.append(img)
    if not thumbs:
        return 0
    cols = min(6, len(thumbs))
    rows_n = (len(thumbs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * _THUMB[0], rows_n * _THUMB[1]), "white")
    for i, img in enumerate(thumbs):
        sheet.paste(img, ((i % cols) * _THUMB[0], (i // cols) * _THUMB[1]))
    sheet.save(target, quality=85)
    return len(thumbs)


def write_dataset_card(store: OutputStore, spec: DatasetSpec, stats: dict, rows: list[dict]) -> str:
    """Write `card/README.md` and its figures; returns the card's path or URI."""
    card_dir = store.staged_dir(CARD)
    durations = [r["duration"] for r in rows if r["duration"] and r["modality"] in ("video", "audio")]
    _duration_histogram(durations, card_dir / "duration_hist.png")
    num_thumbs = _contact_sheet(store, rows, card_dir / "contact_sheet.jpg")
    lines = [
        f"# Dataset card: {spec.name}",
        "",
        spec.description or "",
        "",
        "| inputs | accepted | quarantined | duplicates | shards | media seconds |",
        "|---|---|---|---|---|---|",
        f"| {stats['inputs']} | {stats['accepted']} | {stats['quarantined']} | {stats['duplicates']} "
        f"| {stats['shards']} | {stats['media_seconds']} |",
        "",
        "## Modalities",
        "",
        *[f"- {name}: {count}" for name, count in stats["by_modality"].items()],
        "",
        "## Splits",
        "",
        *[f"- {name}: {count}" for name, count in stats["by_split"].items()],
        "",
        "## Task families",
        "",
        *[f"- {name}: {count}" for name, count in stats["by_task_family"].items()],
        "",
        "## Duration histogram",
        "",
        "![durations](duration_hist.png)",
        "",
        f"## Contact sheet (first sampled frame of {num_thumbs} samples)",
        "",
        "![contact sheet](contact_sheet.jpg)" if num_thumbs else "_no visual samples_",
        "",
        "## Quarantine reasons",
        "",
        *([f"- {reason}: {count}" for reason, count in stats["quarantine_reasons"].items()] or ["- none"]),
        "",
        f"Frame sampling: {spec.frame_sampling.model_dump()}; resize: {spec.resize.model_dump()}; "
        f"audio: {spec.audio.model_dump()}.",
        "",
    ]
    (card_dir / "README.md").write_text("\n".join(lines))
    store.publish_tree(CARD)
    return store.url(f"{CARD}/README.md")
