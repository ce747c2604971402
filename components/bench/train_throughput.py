"""`omnistage bench train`: training throughput, text-only vs multimodal, packing and tracking overhead.

One run, one model (default: the `small` preset), one sequence length:
- `text_tokens_per_s`: train steps on packed text-only sequences;
- `multimodal_tokens_per_s`: train steps on packed multimodal sequences (video, images, speech), the ViT
  and audio encoder running forward and backward inside the step;
- `multimodal_vs_text_ratio`: the seed's headline is > 0.9 (REFERENCE.md section 7);
- `packing_efficiency`: non-padding share when the demo mixture (the curriculum's SFT stage) is packed;
- `tracking_overhead`: extra step time with MLflow async metric logging on (a temporary SQLite store):
  each text sequence is trained twice in a row, without and with logging, so content and drift cancel.
Text and multimodal steps also alternate, and each figure is the median over its steps.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from components.specs.curriculum import CurriculumSpec
from components.training.megatron_step import weighted_loss
from components.training.mixture import MixtureSampler
from components.training.packing import CarryOverPacker
from components.training.render import RenderedSample
from components.training.stage_runner import load_samples, make_batch


def _sequences(samples: list[RenderedSample], seq_length: int, count: int) -> list[list[RenderedSample]]:
    """`count` sequences packed the way training packs them, cycling through the samples that fit."""
    fitting = [s for s in samples if len(s) <= seq_length]
    if not fitting:
        raise ValueError(f"no sample fits in {seq_length} tokens")
    by_key, cursor = {s.key: s for s in fitting}, 0

    def draw() -> tuple[str, int]:
        nonlocal cursor
        cursor += 1
        sample = fitting[(cursor - 1) % len(fitting)]
        return sample.key, len(sample)

    packer = CarryOverPacker(seq_length)
    return [[by_key[key] for key in packer.next(draw)] for _ in range(count)]


def _mixture_packing(samples, by_family, mixture, seq_length, seed, sequences=64) -> float:
    """Non-padding share of the sequences the stage runner's packer makes from this mixture."""
    sampler = MixtureSampler(by_family, mixture, seed=seed)

    def draw() -> tuple[str, int]:
        while True:
            _, key = sampler.next()
            if len(samples[key]) <= seq_length:
                return key, len(samples[key])

    packer = CarryOverPacker(seq_length)
    used = sum(len(samples[key]) for _ in range(sequences) for key in packer.next(draw))
    return used / (sequences * seq_length)


def run_benchmark(dataset: Path, tokenizer_path: Path, curriculum_path: Path, preset_name: str = "small",
                  seq_length: int = 1024, steps: int = 6) -> dict:  # fmt: skip
    from model import tokenizer as tok
    from model.config import get_preset
    from model.distributed import init_parallel
    from model.omni import OmniModel

    curriculum = CurriculumSpec.load(curriculum_path)
    text_stage, mm_stage = curriculum.stages[0], curriculum.stages[-1]
    preset = get_preset(preset_name, llm={"seq_length": seq_length})
    init_parallel(seed=curriculum.seed)
    torch.manual_seed(curriculum.seed)
    tokenizer = tok.load_tokenizer(tokenizer_path)
    if tokenizer.get_vocab_size() > preset.llm.vocab_size:
        raise ValueError(f"{tokenizer_path} has {tokenizer.get_vocab_size()} tokens, more than preset "
                         f"{preset_name}'s vocabulary ({preset.llm.vocab_size})")  # fmt: skip
    datasets = {name: Path(dataset) for name in {*text_stage.data.datasets, *mm_stage.data.datasets}}
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    # the model's (untrained) codec renders speech as codec tokens where the stage asks for them: the same
    # sequence shapes as a trained one
    text, _, _ = load_samples(datasets, text_stage, tokenizer, preset, curriculum.seed, codec=model.codec)
    mm, mm_families, _ = load_samples(datasets, mm_stage, tokenizer, preset, curriculum.seed, codec=model.codec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    every_loss = {"text": 1.0, "audio_text": 1.0, "vision": 1.0, "audio": 1.0}  # every sample's targets count

    def step(parts: list[RenderedSample]) -> float:
        started = time.perf_counter()
        loss = weighted_loss(model(make_batch(parts)), every_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    text_seqs = _sequences(list(text.values()), seq_length, steps + 1)
    mm_seqs = _sequences(list(mm.values()), seq_length, steps + 1)
    step(text_seqs[-1]), step(mm_seqs[-1])  # warm-up: allocator, kernels, lazily built buffers
    text_rates, mm_rates, plain_s, logged_s, call_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{tmp}/bench.db")
        mlflow.set_experiment("omnistage-bench")
        with mlflow.start_run():
            for i in range(steps):
                seconds = step(text_seqs[i])
                plain_s.append(seconds)
                text_rates.append(sum(map(len, text_seqs[i])) / seconds)
                mm_rates.append(sum(map(len, mm_seqs[i])) / step(mm_seqs[i]))
                started = time.perf_counter()
                step(text_seqs[i])
                call = time.perf_counter()
                mlflow.log_metrics({"loss": 1.0, "tokens_per_s": 1.0, "lr": 1.0}, step=i, synchronous=False)
                call_s.append(time.perf_counter() - call)
                logged_s.append(time.perf_counter() - started)
            mlflow.flush_async_logging()
    text_tps, mm_tps = statistics.median(text_rates), statistics.median(mm_rates)
    plain = statistics.median(plain_s)
    return {
        "preset": preset_name,
        "seq_length": seq_length,
        "steps": steps,
        "text_tokens_per_s": round(text_tps, 1),
        "multimodal_tokens_per_s": round(mm_tps, 1),
        "multimodal_vs_text_ratio": round(mm_tps / text_tps, 3),
        "packing_efficiency": round(
            _mixture_packing(mm, mm_families, mm_stage.data.mixture, seq_length, curriculum.seed), 4
        ),  # fmt: skip
        "tracking_overhead": round(statistics.median((b - a) / a for a, b in zip(plain_s, logged_s)), 4),
        "tracking_call_share": round(statistics.median(call_s) / plain, 5),
        "step_s_text": round(plain, 3),
        "torch_threads": torch.get_num_threads(),
    }
