"""`omnistage bench parallel`: stage training on 2 processes per layout against 1 process, and the
multimodal / text-only throughput ratio at data parallel 2.

    results = run_benchmark(BenchSettings(dataset=Path("work/datasets/demo"), tokenizer=Path("work/tokenizer.json")))

One invocation starts `run_stage` under torchrun (components.bench.parallel_worker, one thread per rank):
1. one process on the multimodal stage (default: the tiny curriculum's `sft`: images, video, speech through
   the ViT and audio encoder, every module but the codec trainable), which first writes the initial weights;
2. two processes from those weights on the same global batches for each layout: `dp2` (data parallel 2),
   `tp2-sp` (tensor parallel 2 with sequence parallel), `ep2` (expert parallel 2, data parallel 2),
   `pp2` (pipeline parallel 2). Per layout: `max_rel_grad_diff` over every parameter's step-1 gradient
   (largest |diff| of a tensor over its largest reference |grad|, components.training.parallel_compare),
   `loss_diff` (largest per-step loss difference), `tokens_per_s` (non-padding tokens of the global batch
   per second of step, median of the steps after the first) and `throughput_vs_1proc`;
3. at data parallel 2, the same stage on a text-only mixture: `multimodal_vs_text_ratio`, over sequence
   positions per second (see ratio_row; the non-padding-token ratio and packing are reported beside it);
4. the same pair on a copy of the dataset with the model report's frame sizes (components.bench.paper_frames,
   synthesised pictures) at a longer sequence: `multimodal_vs_text_ratio_paper_frames`.
`encoder_parallel` is what run_stage reports for how it held the encoders (StageResult.encoder_parallel).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from components.training.torchrun_ranks import REPO_ROOT, run_ranks

WORKER = Path(__file__).resolve().with_name("parallel_worker.py")
# layout name -> (tensor, pipeline, expert) sizes at 2 processes; data parallel is what they leave
LAYOUTS: dict[str, dict[str, int]] = {"dp2": {}, "tp2-sp": {"tp": 2}, "ep2": {"ep": 2}, "pp2": {"pp": 2}}
LAYOUT_KEYS = ("max_rel_grad_diff", "worst_parameter", "loss_diff", "tokens_per_s", "throughput_vs_1proc",
               "encoder_parallel")  # fmt: skip
TOP_KEYS = ("machine", "settings", "one_process", "layouts", "multimodal_vs_text_ratio",
            "multimodal_vs_text_ratio_paper_frames", "ratio_runs")  # fmt: skip


@dataclass
class BenchSettings:
    dataset: Path
    """An ingested dataset folder (shards/, stats.json): the demo corpus after `make run`."""
    tokenizer: Path
    """tokenizer.json trained on it."""
    curriculum: Path = REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml"
    stage: str = "sft"
    """The multimodal stage measured (its mixture must draw images, video and speech)."""
    preset: str = "tiny"
    """Model preset: `tiny` (seconds per run) or `small`."""
    steps: int = 5
    """Steps per run; tokens/s is the median of the steps after the first (warm-up), gradients are step 1's."""
    seq_length: int = 512
    global_batch_size: int = 2
    layouts: list[str] = field(default_factory=lambda: list(LAYOUTS))
    ratio: bool = True
    """Measure multimodal_vs_text_ratio (two more 2-process runs)."""
    paper_frames: bool = True
    """Measure multimodal_vs_text_ratio_paper_frames (two more 2-process runs at paper_seq_length)."""
    paper_seq_length: int = 4096
    frames_per_clip: int = 16
    timeout_s: int = 900
    """Limit per torchrun launch."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.layouts) - set(LAYOUTS))
        if unknown:
            raise ValueError(f"unknown layout(s) {unknown} (--layouts); known: {list(LAYOUTS)}")
        from model.config import PRESETS

        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset '{self.preset}' (--preset); known: {sorted(PRESETS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1 (--steps), got {self.steps}")
        if self.global_batch_size % 2:
            raise ValueError(f"global_batch_size must be even (data parallel 2 splits it), "
                             f"got {self.global_batch_size}")
        for path in (self.dataset, self.tokenizer, self.curriculum):
            if not Path(path).exists():
                raise ValueError(f"{path} does not exist: run `make run` first (it ingests the demo corpus), "
                                 "or pass it")


def machine() -> dict:
    """What the numbers were measured on: CPU model (as lscpu names it), cores, torch, backend."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else (
        platform.processor())  # fmt: skip
    cuda = torch.cuda.is_available()
    return {"cpu_model": model, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
            "backend": "nccl" if cuda else "gloo", "gpu": torch.cuda.get_device_name() if cuda else None,
            "threads_per_rank": 1}  # fmt: skip


def steady_tokens_per_s(record: dict) -> float:
    """Median tokens/s of the steps after the first (which pays one-off costs); the only one for 1 step."""
    rates = record["tokens_per_s"]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def summarise_layout(one: dict, ranks: list[dict], grad_diff: tuple[float, str]) -> dict:
    """One layout's row from the one-process record, each 2-process rank's record and the worst gradient
    difference (parallel_compare.worst_relative_diff)."""
    reference = one["losses"]
    if any(r["order"] != one["order"] for r in ranks):  # the comparison is only meaningful on equal batches
        raise RuntimeError("the 2-process run trained on other global batches than the 1-process run")
    tokens_per_s = steady_tokens_per_s(ranks[0])
    labels = {r["encoder_parallel"] for r in ranks}
    return {
        "max_rel_grad_diff": float(f"{grad_diff[0]:.3g}"),
        "worst_parameter": grad_diff[1] if grad_diff[0] > 0 else None,  # None: every gradient equal
        "loss_diff": float(f"{max(abs(a - b) for r in ranks for a, b in zip(r['losses'], reference)):.3g}"),
        "tokens_per_s": round(tokens_per_s, 1),
        "throughput_vs_1proc": round(tokens_per_s / steady_tokens_per_s(one), 3),
        "encoder_parallel": labels.pop() if len(labels) == 1 else "mixed: " + ",".join(sorted(labels)),
    }  # fmt: skip


def steady_positions_per_s(record: dict) -> float:
    """Sequence positions (padding included) per second of step, median after the first step."""
    seconds = record["step_s"]
    return record["positions_per_step"] / statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def ratio_row(multimodal: list[dict], text: list[dict]) -> dict:
    """Multimodal vs text-only throughput of two runs at the same layout and sequence shape.

    `ratio` is over positions per second: run_stage pads every micro-batch to the sequence length, so a step
    computes global_batch x seq_length positions whatever the data, and how full the packer gets them is a
    property of the dataset (a few short text documents cannot fill a 4096-token window of 32 draws), not of
    the modality. `ratio_non_padding` is over non-padding tokens/s, packing included."""
    mm, tx = steady_positions_per_s(multimodal[0]), steady_positions_per_s(text[0])
    mm_tokens, tx_tokens = steady_tokens_per_s(multimodal[0]), steady_tokens_per_s(text[0])
    return {"ratio": round(mm / tx, 3), "multimodal_positions_per_s": round(mm, 1),
            "text_positions_per_s": round(tx, 1), "ratio_non_padding": round(mm_tokens / tx_tokens, 3),
            "multimodal_tokens_per_s": round(mm_tokens, 1), "text_tokens_per_s": round(tx_tokens, 1),
            "multimodal_packing": round(multimodal[0]["packing_efficiency"], 3),
            "text_packing": round(text[0]["packing_efficiency"], 3),
            "multimodal_ffn_experts_per_token": round(statistics.mean(multimodal[0]["ffn_experts_per_token"]), 2),
            "text_ffn_experts_per_token": round(statistics.mean(text[0]["ffn_experts_per_token"]), 2),
            "encoder_parallel": multimodal[0]["encoder_parallel"]}  # fmt: skip


def run_benchmark(settings: BenchSettings) -> dict:
    from components.specs.curriculum import CurriculumSpec
    from components.training import parallel_compare as compare
    from model.distributed import ParallelSizes, init_parallel, teardown_parallel

    curriculum = CurriculumSpec.load(settings.curriculum)
    stage = curriculum.stage(settings.stage)  # refuses an unknown stage with the known names
    common = ["--curriculum", settings.curriculum, "--stage", stage.name, "--preset", settings.preset,
              "--tokenizer", settings.tokenizer, "--steps", settings.steps,
              "--global-batch", settings.global_batch_size]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp_name:
        tmp = Path(tmp_name)

        def launch(name: str, nproc: int, *args, dataset: Path = settings.dataset,
                   seq_length: int = settings.seq_length) -> list[dict]:  # fmt: skip
            return run_ranks(WORKER, nproc, tmp / name / "res", *common, "--dataset", dataset, "--out",
                             tmp / name / "out", "--seq-length", seq_length, *args,
                             timeout=settings.timeout_s)  # fmt: skip

        one = launch("1proc", 1, "--init", tmp / "init", "--save-init", "--grads")[0]
        ranks = {name: launch(name, 2, "--init", tmp / "init", "--grads", *[a for k, v in LAYOUTS[name].items()
                                                                              for a in (f"--{k}", v)])
                 for name in settings.layouts}  # fmt: skip
        layouts = {}
        if ranks:  # every layout's gradients reassembled in one process and compared by parameter name
            one_curriculum, one_stage = compare.layout_stage(curriculum, stage.name, ParallelSizes(),
                                                             seq_length=settings.seq_length,
                                                             preset=settings.preset)  # fmt: skip
            init_parallel(seed=curriculum.seed)
            try:
                model = compare.build_stage_model(one_curriculum, one_stage, settings.tokenizer)
                want = compare.load_gradients(tmp / "1proc" / "res.grads", model, settings.preset)
                for name, records in ranks.items():
                    got = compare.load_gradients(tmp / name / "res.grads", model, settings.preset)
                    layouts[name] = summarise_layout(one, records, compare.worst_relative_diff(got, want))
            finally:
                teardown_parallel()
        ratios = {}
        text_only = ["--mixture", '{"text": 1.0}']
        if settings.ratio:
            ratios["demo_frames"] = ratio_row(launch("mm-dp2", 2), launch("text-dp2", 2, *text_only))
        if settings.paper_frames:
            from components.bench.paper_frames import write_paper_frame_dataset

            frames = write_paper_frame_dataset(settings.dataset, tmp / "paper-data", settings.paper_seq_length,
                                               settings.frames_per_clip)  # fmt: skip
            paper = {"dataset": tmp / "paper-data", "seq_length": settings.paper_seq_length}
            row = ratio_row(launch("paper-mm-dp2", 2, **paper), launch("paper-text-dp2", 2, *text_only, **paper))
            ratios["paper_frames"] = {**row, "seq_length": settings.paper_seq_length, "synthesised": True, **frames}
    return build_results(settings, one, layouts, ratios)


def build_results(settings: BenchSettings, one: dict, layouts: dict, ratios: dict) -> dict:
    """The JSON document: every key of TOP_KEYS (a ratio not measured is null)."""
    return {
        "machine": machine(),
        "settings": {"curriculum": str(settings.curriculum), "stage": settings.stage, "preset": settings.preset,
                     "steps": settings.steps, "seq_length": settings.seq_length,
                     "global_batch_size": settings.global_batch_size, "micro_batch_size": 1,
                     "paper_seq_length": settings.paper_seq_length},  # fmt: skip
        "one_process": {"tokens_per_s": round(steady_tokens_per_s(one), 1), "losses": one["losses"],
                        "encoder_parallel": one["encoder_parallel"]},  # fmt: skip
        "layouts": layouts,
        "multimodal_vs_text_ratio": ratios["demo_frames"]["ratio"] if "demo_frames" in ratios else None,
        "multimodal_vs_text_ratio_paper_frames": ratios["paper_frames"]["ratio"] if "paper_frames" in ratios else None,
        "ratio_runs": {name: {**row, "layout": "dp2"} for name, row in ratios.items()},
    }


def format_table(results: dict) -> str:
    """The human-readable form: one line per layout, then the ratios."""
    lines = [f"{results['machine']['cpu_model']} ({results['machine']['cpu_cores']} cores, "
             f"{results['machine']['backend']}); preset {results['settings']['preset']}, "
             f"{results['settings']['steps']} steps of {results['settings']['global_batch_size']} x "
             f"{results['settings']['seq_length']} tokens",
             f"{'layout':<8} {'max_rel_grad_diff':>17} {'loss_diff':>10} {'tokens/s':>9} {'vs 1 proc':>9}  encoders",
             f"{'1 proc':<8} {'-':>17} {'-':>10} {results['one_process']['tokens_per_s']:>9.1f} {'1.000':>9}  "
             f"{results['one_process']['encoder_parallel']}"]  # fmt: skip
    for name, row in results["layouts"].items():
        lines.append(f"{name:<8} {row['max_rel_grad_diff']:>17.2e} {row['loss_diff']:>10.2e} "
                     f"{row['tokens_per_s']:>9.1f} {row['throughput_vs_1proc']:>9.3f}  "
                     f"{row['encoder_parallel']}")  # fmt: skip
    for name, row in results["ratio_runs"].items():
        lines.append(f"multimodal / text at dp2, {name}: {row['ratio']:.3f} "
                     f"({row['multimodal_positions_per_s']:.1f} vs {row['text_positions_per_s']:.1f} positions/s; "
                     f"non-padding tokens {row['ratio_non_padding']:.3f}; "
                     f"encoders {row['encoder_parallel']})")  # fmt: skip
    return "\n".join(lines)
