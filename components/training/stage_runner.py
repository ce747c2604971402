"""Run one curriculum stage on one process: the training core behind `omnistage train`.

    result = run_stage(StageRun(curriculum, "stage0-text", {"demo": Path("work/datasets/demo")},
                                tokenizer=Path("work/tokenizer.json"), out=Path("work/runs/x/stage0-text")))

Builds the preset with the stage's RoPE base and sequence length, initialises from the previous stage's
checkpoint (weights only) or resumes its own (weights, optimizer, scheduler, RNG, data position),
freezes what the stage does not train, streams the stage's task-family mixture from the shards, packs
samples into fixed-length sequences, and trains with the stage's loss weights. Deterministic for a seed.

A corrupt sample or shard is skipped and counted (`data/skipped_corrupt`, `data/missing_shards`), never a
crash. Checkpoints: see components.training.checkpoint (Megatron dist_checkpointing weights + training
state). Scope: this loop runs one process (the tiny and small presets on CPU); the weights it writes load
at any TP/EP layout, but the multi-GPU loop itself (megatron DDP + distributed optimizer under torchrun)
is not built yet - it needs GPUs to be worth running.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import webdataset as wds

from components.specs.curriculum import CurriculumSpec, StageSpec
from components.training.checkpoint import checkpoint_dir, load_train_state, load_weights, save_checkpoint
from components.training.checkpoint_layout import CHECKPOINT_DIR
from components.training.checkpoint_store import local_checkpoint, publish_from_rank0, restore_for_resume
from components.training.mixture import MixtureSampler
from components.training.packing import CarryOverPacker
from components.training.render import RenderedSample, render_sample
from model import tokenizer as tok
from model.config import get_preset
from model.distributed import init_parallel
from model.llm.moe import BiasControllerConfig, ExpertBiasController
from model.omni import OmniBatch, OmniModel

log = logging.getLogger(__name__)


@dataclass
class StageRun:
    curriculum: CurriculumSpec
    stage: str
    datasets: dict[str, Path]
    tokenizer: Path
    out: Path
    init_from: Path | str | None = None  # a checkpoint folder or a URI it was published to (downloaded first)
    resume: bool = False
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still spans the budget
    checkpoint_every: int = 10
    on_step: Callable[[int, dict], None] | None = None  # tracking callback: (step, metrics)
    checkpoint_uri: str | None = None  # publish every save there too (components.training.checkpoint_store)


@dataclass
class StageResult:
    stage: str
    steps: int
    final_loss: float
    checkpoint: Path
    packing_efficiency: float
    skipped_too_long: int
    history: list[dict] = field(default_factory=list)
    data_order: list[list[str]] = field(default_factory=list)  # sample keys packed at each step
    data_problems: dict[str, int] = field(default_factory=dict)
    checkpoint_uri: str | None = None  # where the final checkpoint was published, when it was


def module_groups(model: OmniModel) -> dict[str, list[torch.nn.Parameter]]:
    """Curriculum module names -> parameters (see components.specs.curriculum.MODULES)."""
    vit_body = [p for n, p in model.vit.named_parameters() if not n.startswith("projector.")]
    audio_body = [p for n, p in model.audio_encoder.named_parameters() if not n.startswith("projector.")]
    return {
        "llm": list(model.llm.parameters()),
        "vit": vit_body,
        "vit_projector": list(model.vit.projector.parameters()),
        "audio_encoder": audio_body,
        "audio_encoder_projector": list(model.audio_encoder.projector.parameters()),
        "audio_embeddings": list(model.audio_embeddings.parameters()),
        "audio_heads": list(model.audio_heads.parameters()),
        "codec": [],  # trained by its own stage outside the omni model
    }


def apply_freezing(model: OmniModel, stage: StageSpec) -> int:
    """Train exactly the stage's `train` modules; returns the number of trainable parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    groups = module_groups(model)
    for name in stage.train:
        for param in groups[name]:
            param.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lr_lambda(stage: StageSpec, total_steps: int) -> Callable[[int], float]:
    base, floor = stage.optimizer.lr, stage.schedule.min_lr
    warmup = stage.schedule.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if stage.schedule.name == "cosine":
            return (floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))) / base
        if stage.schedule.name == "linear":
            return (floor + (base - floor) * (1 - progress)) / base
        return 1.0

    return factor


def load_samples(datasets: dict[str, Path], stage: StageSpec, tokenizer, preset,
                 seed: int) -> tuple[dict[str, RenderedSample], dict, dict]:  # fmt: skip
    """Render the stage's training samples; returns (samples by key, keys by family, problem counts)."""
    samples: dict[str, RenderedSample] = {}
    problems = {"skipped_corrupt": 0, "missing_shards": 0}

    def skip(exc: Exception) -> bool:  # webdataset's handler: count, warn, go on with the next sample
        problems["skipped_corrupt"] += 1
        log.warning("skipping unreadable data in stage %s: %s", stage.name, exc)
        return True

    for dataset in stage.data.datasets:
        if dataset not in datasets:
            raise ValueError(f"stage '{stage.name}' needs dataset '{dataset}'; given: {sorted(datasets)}")
        folder = Path(datasets[dataset])
        shards = sorted(str(p) for p in (folder / "shards").glob("*.tar"))
        expected = json.loads((folder / "stats.json").read_text()).get("shards", len(shards))
        if len(shards) < expected:
            problems["missing_shards"] += expected - len(shards)
            log.warning("%s: %d of %d shards are missing; training on the rest", folder, expected - len(shards),
                        expected)  # fmt: skip
        for raw in wds.WebDataset(shards, shardshuffle=False, handler=skip, empty_check=False):
            try:
                if "json" not in raw:
                    continue
                raw["json"] = json.loads(raw["json"])  # parsed once; render_sample takes the dict
                if raw["json"].get("split") != "train":
                    continue
                rendered = render_sample(raw, tokenizer, preset.vit, preset.audio_encoder, seed=seed)
            except Exception as exc:  # a damaged member inside a readable tar (bad JSON, JPEG, WAV)
                skip(exc)
                continue
            if rendered is not None and rendered.task_family in stage.data.mixture:
                samples[rendered.key] = rendered
    by_family: dict[str, list[str]] = {}
    for key, sample in samples.items():
        by_family.setdefault(sample.task_family, []).append(key)
    return samples, by_family, problems


def make_batch(parts: list[RenderedSample]) -> OmniBatch:
    ids = [i for p in parts for i in p.input_ids]
    labels = [t for p in parts for t in p.labels]
    visuals = [v for p in parts for v in p.visuals]
    audio = [a for p in parts for a in p.audio_features]
    documents = torch.tensor([[i for i, p in enumerate(parts) for _ in range(len(p))]])
    return OmniBatch(torch.tensor([ids]), torch.tensor([labels]), visuals=visuals or None, audio_features=audio or None,
                     document_ids=documents)  # fmt: skip


def _family_losses(parts: list[RenderedSample], token_losses: torch.Tensor) -> dict[str, float]:
    """Mean text loss per task family over the packed sequence's target tokens."""
    sums: dict[str, list[float]] = {}
    offset = 0
    for part in parts:
        labels = torch.tensor(part.labels) != -100
        segment = token_losses[offset : offset + len(part)][labels]
        offset += len(part)
        if segment.numel():
            total = sums.setdefault(part.task_family, [0.0, 0])
            total[0] += float(segment.sum())
            total[1] += segment.numel()
    return {f"loss/family/{family}": s / n for family, (s, n) in sums.items()}


def weighted_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    total = weights.get("text", 1.0) * losses["text"]
    if "audio_semantic" in losses and "audio" in weights:
        total = total + weights["audio"] * (losses["audio_semantic"] + losses["audio_acoustic"])
    return total


def run_stage(run: StageRun) -> StageResult:
    curriculum, stage = run.curriculum, run.curriculum.stage(run.stage)
    if stage.budget.steps is None:
        raise ValueError(f"stage '{stage.name}' has a token budget; the single-process runner needs budget.steps")
    preset = get_preset(curriculum.preset, llm={"rope_theta": stage.rope_theta, "seq_length": stage.seq_length})
    init_parallel(seed=curriculum.seed)
    torch.manual_seed(curriculum.seed)
    tokenizer = tok.load_tokenizer(run.tokenizer)
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    if run.resume and run.checkpoint_uri and not _has_checkpoint(run.out):  # a retried pod on a fresh node
        restore_for_resume(run.checkpoint_uri, Path(run.out) / CHECKPOINT_DIR)
    resuming = run.resume and _has_checkpoint(run.out)
    if run.init_from is not None and not resuming:  # a retried task resumes only once it has saved
        load_weights(local_checkpoint(run.init_from), model, curriculum.preset)
    trainable = apply_freezing(model, stage)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.optimizer.lr, betas=stage.optimizer.betas,
                                  weight_decay=stage.optimizer.weight_decay)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage, stage.budget.steps))
    controller = ExpertBiasController(model.llm, BiasControllerConfig(preset.llm.target_ffn_experts_per_token))
    samples, by_family, problems = load_samples(run.datasets, stage, tokenizer, preset, curriculum.seed)
    if not samples:
        raise ValueError(f"stage '{stage.name}': no readable training samples of {sorted(stage.data.mixture)} in "
                         f"{[str(run.datasets[d]) for d in stage.data.datasets]}")  # fmt: skip
    sampler = MixtureSampler(by_family, stage.data.mixture, seed=curriculum.seed)
    packer = CarryOverPacker(stage.seq_length)
    step, used, capacity, skipped, history, order = 0, 0, 0, 0, [], []
    if resuming:
        load_weights(run.out, model, curriculum.preset)
        state = load_train_state(run.out)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        packer.load_state_dict(state["packer"])
        controller.load_state_dict(state["bias_controller"])
        torch.set_rng_state(state["rng"])
        step, used, capacity, skipped = state["step"], *state["counters"]
        log.info("resumed stage %s at step %d from %s", stage.name, step, checkpoint_dir(run.out))
    log.info("stage %s: %d trainable parameters, %d samples", stage.name, trainable, len(samples))
    last_steps = min(stage.budget.steps, run.max_steps or stage.budget.steps)

    def draw() -> tuple[str, int]:  # the mixture's next sample that fits the sequence length
        nonlocal skipped
        while True:
            _, key = sampler.next()
            if len(samples[key]) <= stage.seq_length:
                return key, len(samples[key])
            skipped += 1

    while step < last_steps:
        parts = [samples[key] for key in packer.next(draw)]
        order.append([p.key for p in parts])
        used_now = sum(len(p) for p in parts)
        used, capacity = used + used_now, capacity + stage.seq_length
        started = time.perf_counter()
        losses = model(make_batch(parts))
        loss = weighted_loss(losses, stage.loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.optimizer.grad_clip)
        optimizer.step()
        scheduler.step()
        ffn_experts = controller.step()
        step += 1
        metrics = {"loss": loss.item(), **{f"loss/{k}": v.item() for k, v in losses.items()},
                   "lr": scheduler.get_last_lr()[0], "packing_efficiency": used / capacity,
                   "ffn_experts_per_token": ffn_experts, "tokens": used,
                   "tokens_per_s": used_now / (time.perf_counter() - started),
                   **{f"data/{k}": v for k, v in problems.items()},
                   **_family_losses(parts, model.last_text_token_losses[0])}  # fmt: skip
        history.append(metrics)
        if run.on_step:
            run.on_step(step, metrics)
        if step % run.checkpoint_every == 0 or step == last_steps:
            train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "sampler": sampler.state_dict(), "packer": packer.state_dict(),
                           "rng": torch.get_rng_state(), "step": step, "bias_controller": controller.state_dict(),
                           "counters": (used, capacity, skipped)}  # fmt: skip
            meta = {"preset": curriculum.preset, "preset_overrides": {"rope_theta": stage.rope_theta,
                    "seq_length": stage.seq_length}, "curriculum": curriculum.name, "stage": stage.name,
                    "step": step}  # fmt: skip
            saved = save_checkpoint(run.out, model, train_state, meta, files={"tokenizer.json": run.tokenizer})
            if run.checkpoint_uri:
                publish_from_rank0(saved, run.checkpoint_uri)
    return StageResult(stage.name, step, history[-1]["loss"] if history else float("nan"), checkpoint_dir(run.out),
                       used / capacity if capacity else 0.0, skipped, history, order, problems,
                       run.checkpoint_uri)  # fmt: skip


def _has_checkpoint(out: Path) -> bool:
    try:
        checkpoint_dir(out)
    except FileNotFoundError:
        return False
    return True
