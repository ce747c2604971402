"""Ingestion throughput against the floor of bare ffmpeg decoding, and shard read throughput.

Generates N videos of 30-60 s at 640x360 (H.264 + AAC), then measures, in one run:

- the floor: `ffmpeg -i X -vf fps=2 -f null -` per file (decode everything, keep 2 fps, write nothing);
- omnistage: `omnistage ingest` end to end in a subprocess, with 1 and with 2 workers; a run on a single
  video gives the fixed cost per run (interpreter, imports, Great Expectations, reports), so the
  steady-state throughput per media-second is reported beside the end-to-end one;
- CPU seconds are the children's user+sys time (getrusage), so threads and worker processes count;
- the Ray executor (`--executor ray`, a local Ray started and stopped by the run) against the local
  process pool at the same worker count, on the same videos: `ray_vs_local`;
- shard reading with plain `webdataset` (no decoding) against `cat` of the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.progress import track


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(cmd: list[str], **kwargs) -> tuple[float, float]:
    """(cpu seconds, wall seconds) of one child command."""
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return _children_cpu() - cpu0, time.perf_counter() - wall0


def _measure_tree(cmd: list[str], poll_s: float = 0.25) -> tuple[float, float]:
    """(cpu seconds, wall seconds) of a command and every process under it. Ray's raylet does not wait
    for its worker processes, so getrusage misses their CPU; this samples each process's own CPU in the
    tree instead (not its children's, which are sampled themselves). A lower bound: the last < `poll_s`
    of each process and processes shorter than that (ffprobe calls) are missed."""
    import psutil

    cpu_by_pid: dict[int, float] = {}
    wall0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:  # the command ended between poll() and here
            tree = []
        for proc in tree:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            cpu_by_pid[proc.pid] = times.user + times.system
        time.sleep(poll_s)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, cmd)
    return sum(cpu_by_pid.values()), time.perf_counter() - wall0


def generate_videos(folder: Path, num_videos: int) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i in track(range(num_videos), "generate benchmark videos", unit="videos"):
        duration = 30 + (i * 7) % 31  # 30..60 s, deterministic
        total += duration
        # Each video gets its own hue (>= 18 degrees apart up to 20 videos): the same testsrc2 footage would
        # otherwise be near duplicates of one another, and ingestion would rightly keep only one.
        hue = round(i * 360 / max(num_videos, 20))
        out = folder / f"bench-{i:03d}-h{hue}.mp4"
        if out.exists():
            continue
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=s=640x360:r=25:d={duration},hue=h={hue}",
             "-f", "lavfi", "-i", f"sine=f={200 + 10 * i}:sample_rate=44100:d={duration}",
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out)],
            check=True,
        )  # fmt: skip
    return total


def _omnistage() -> str:
    return str(Path(sys.executable).parent / "omnistage")


def _ingest_cmd(videos: Path, out: Path, workers: int) -> list[str]:
    return [_omnistage(), "ingest", "--input", str(videos), "--out", str(out), "--workers", str(workers)]


def run_benchmark(num_videos: int = 20, worker_counts: list[int] | None = None, keep: Path | None = None) -> dict:
    worker_counts = worker_counts or [1, 2]
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="omnistage-bench-"))
    try:
        videos = root / "videos"
        media_s = generate_videos(videos, num_videos)
        files = sorted(videos.glob("*.mp4"))
        floor_cpu = floor_wall = 0.0
        for path in track(files, "floor: ffmpeg -vf fps=2 -f null", unit="videos"):
            cpu, wall = _measure(["ffmpeg", "-nostdin", "-i", str(path), "-vf", "fps=2", "-f", "null", "-"])
            floor_cpu, floor_wall = floor_cpu + cpu, floor_wall + wall
        results: dict = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "num_videos": len(files),
            "media_seconds": media_s,
            "ffmpeg_floor_cpu_s": round(floor_cpu, 2),
            "ffmpeg_floor_media_s_per_cpu_s": round(media_s / floor_cpu, 2),
        }
        # Fixed cost of one run (interpreter, imports, Great Expectations, reports), measured on one video,
        # so the steady-state (per media-second) cost can be told apart from it.
        single = root / "single"
        single.mkdir(exist_ok=True)
        shutil.copy(files[0], single / files[0].name)
        single_media = 30.0  # the first generated video is 30 s long
        single_cpu, _ = _measure(_ingest_cmd(single, root / "out-single", 1))
        walls = {}
        for workers in worker_counts:
            out = root / f"out-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            cpu, wall = _measure(_ingest_cmd(videos, out, workers))
            accepted = json.loads((out / "stats.json").read_text())["accepted"]
            if accepted != len(files):  # a throughput over fewer videos than timed would be wrong
                raise RuntimeError(f"benchmark ingestion accepted {accepted} of {len(files)} videos: see {out}")
            walls[workers] = wall
            results[f"workers_{workers}"] = {
                "cpu_s": round(cpu, 2),
                "wall_s": round(wall, 2),
                "media_s_per_cpu_s": round(media_s / cpu, 2),
                "steady_media_s_per_cpu_s": round((media_s - single_media) / (cpu - single_cpu), 2),
            }
        first = results[f"workers_{worker_counts[0]}"]
        results["fixed_cpu_s_per_run"] = round(single_cpu - single_media / first["steady_media_s_per_cpu_s"], 2)
        results["omnistage_media_s_per_cpu_s"] = first["media_s_per_cpu_s"]
        floor = results["ffmpeg_floor_media_s_per_cpu_s"]
        results["ratio_vs_ffmpeg_floor"] = round(first["media_s_per_cpu_s"] / floor, 3)
        results["steady_ratio_vs_ffmpeg_floor"] = round(first["steady_media_s_per_cpu_s"] / floor, 3)
        if len(worker_counts) > 1:
            results["wall_speedup"] = {
                f"{w}_vs_{worker_counts[0]}": round(walls[worker_counts[0]] / walls[w], 2) for w in worker_counts[1:]
            }
        ray_workers = max(worker_counts)
        local = results[f"workers_{ray_workers}"]
        results["ray_vs_local"] = measure_ray_vs_local(videos, root, ray_workers, local["wall_s"], local["cpu_s"])
        results["read"] = measure_read(root / f"out-w{worker_counts[0]}" / "shards")
        return results
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def measure_ray_vs_local(videos: Path, root: Path, workers: int, local_wall_s: float, local_cpu_s: float) -> dict:
    """Ingest the same videos with the Ray executor and `workers` workers; compare with the local pool's run
    in `root/out-w{workers}` (throughput = the same media seconds per wall second, so a wall ratio)."""
    out = root / f"out-ray-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    cpu, wall = _measure_tree([*_ingest_cmd(videos, out, workers), "--executor", "ray"])
    return {
        "workers": workers,
        "throughput_ratio": round(local_wall_s / wall, 3),  # > 1: Ray ingested faster than the pool
        "ray_wall_s": round(wall, 2),
        "ray_cpu_s": round(cpu, 2),
        "local_wall_s": local_wall_s,
        "local_cpu_s": local_cpu_s,
        "identical_outputs": _output_digests(out) == _output_digests(root / f"out-w{workers}"),
        "note": "the Ray run includes starting and stopping a local Ray; ray_cpu_s is sampled over its "
        "process tree every 0.25 s (a lower bound), local_cpu_s is getrusage of the run",
    }


def _output_digests(out: Path) -> dict[str, str]:
    files = sorted(out.glob("shards/*.tar")) + [out / "manifest.parquet", out / "quarantine.jsonl"]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def measure_read(shard_dir: Path) -> dict:
    import webdataset as wds

    shards = sorted(str(p) for p in shard_dir.glob("*.tar"))
    num_bytes = sum(Path(s).stat().st_size for s in shards)
    started = time.perf_counter()
    subprocess.run(["cat", *shards], check=True, stdout=subprocess.DEVNULL)
    cat_s = time.perf_counter() - started
    started = time.perf_counter()
    samples = sum(1 for _ in wds.WebDataset(shards, shardshuffle=False))
    read_s = time.perf_counter() - started
    return {
        "shard_mb": round(num_bytes / 1e6, 1),
        "samples": samples,
        "webdataset_samples_per_s": round(samples / read_s, 1),
        "webdataset_mb_per_s": round(num_bytes / 1e6 / read_s, 1),
        "cat_mb_per_s": round(num_bytes / 1e6 / cat_s, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run_benchmark(), indent=2))
