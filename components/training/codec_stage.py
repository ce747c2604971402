"""The codec's own training stage (a curriculum stage with `train: [codec]`, `loss_weights: {codec: 1.0}`).

Why a curriculum stage rather than a pipeline step: its weights then travel the way every stage's do.
The codec lives inside `model.omni.OmniModel` (`model.codec`), this stage saves the whole omni model's
checkpoint, and the next stage's `init_from` carries the trained codec through every later checkpoint:
stages 1-4 encode speech input and speech-response targets with it (components.training.render,
speech_render) and evaluation decodes speech output with it. The stage also gets the pipeline's MLflow
tracking, retries and caching for free.

The loop: log-mel frames of every training clip of the stage's mixture families (once), the residual VQ
initialised by k-means on the untrained encoder's latents (model.codec.ResidualVQ.init_from_data), then
`budget.steps` AdamW steps of reconstruction + commitment loss (AudioCodec.mel_loss) on random crops of
`CROP_FRAMES` frames from `CLIPS_PER_STEP` clips. One process (the tiny codec is a few hundred thousand
parameters); `--resume` retrains the stage from the start (it takes about a minute).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import webdataset as wds

from components.training.checkpoint import save_checkpoint
from components.training.render import task_family, waveform
from model import tokenizer as tok
from model.codec import AudioCodec
from model.config import get_preset
from model.distributed import init_parallel
from model.omni import OmniModel

log = logging.getLogger(__name__)

CLIPS_PER_STEP = 8
CROP_FRAMES = 48  # ~2.9 s at 16.67 Hz


def training_mels(datasets: dict[str, Path], stage, codec: AudioCodec) -> list[torch.Tensor]:
    """Log-mel frames [frames, mel] of each training-split clip with audio in the stage's mixture families."""
    mels = []
    for dataset in stage.data.datasets:
        shards = sorted(str(p) for p in (Path(datasets[dataset]) / "shards").glob("*.tar"))
        for raw in wds.WebDataset(shards, shardshuffle=False, empty_check=False, nodesplitter=lambda urls: urls):
            meta = json.loads(raw["json"]) if "json" in raw else {}
            if meta.get("split") != "train" or task_family(meta) not in stage.data.mixture or "wav" not in raw:
                continue
            with torch.no_grad():
                mels.append(codec.mel(waveform({**raw, "json": meta}, codec.cfg.sample_rate)))
    if not mels:
        raise ValueError(f"stage '{stage.name}' trains the codec but found no training audio in the families "
                         f"{sorted(stage.data.mixture)} of {sorted(stage.data.datasets)}; mix in asr or voice_qa")
    return mels


def _crop(mel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if mel.shape[0] <= CROP_FRAMES:
        return mel
    start = int(torch.randint(0, mel.shape[0] - CROP_FRAMES + 1, (1,), generator=generator))
    return mel[start : start + CROP_FRAMES]


def run_codec_stage(run):
    """Train `model.codec` for the stage's budget; returns a `StageResult` like `run_stage`.

    Runs with one intra-op thread: the codec's convolutions are too small to split, and on the 2-core
    machine under load 40 steps took 204 s with torch's default threads and 10 s with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_codec(run)
    finally:
        torch.set_num_threads(threads)


def _train_codec(run):
    from components.training.checkpoint import load_weights
    from components.training.checkpoint_store import local_checkpoint
    from components.training.data_parallel import launch_world
    from components.training.stage_runner import StageResult, apply_freezing

    curriculum, stage = run.curriculum, run.curriculum.stage(run.stage)
    world = launch_world()[0]
    if world > 1:
        raise ValueError(f"stage '{stage.name}' trains the codec in one process; started with {world}: set its "
                         "resources to one process (processes_per_node: 1, gpus_per_node: 0 or 1)")  # fmt: skip
    if set(stage.loss_weights) != {"codec"}:
        raise ValueError(f"stage '{stage.name}' trains the codec: its loss_weights must be {{codec: 1.0}}, got "
                         f"{stage.loss_weights}")  # fmt: skip
    if stage.budget.steps is None:
        raise ValueError(f"stage '{stage.name}': the codec stage counts steps, not tokens; set budget.steps")
    preset = get_preset(curriculum.preset, llm={"rope_theta": stage.rope_theta, "seq_length": stage.seq_length})
    init_parallel(seed=curriculum.seed)
    torch.manual_seed(curriculum.seed)
    tokenizer = tok.load_tokenizer(run.tokenizer)
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    if run.init_from is not None:
        load_weights(local_checkpoint(run.init_from), model, curriculum.preset)
    apply_freezing(model, stage)
    codec = model.codec
    mels = training_mels(run.datasets, stage, codec)
    with torch.no_grad():
        codec.quantizer.init_from_data(torch.cat([codec.encode_latents(m) for m in mels]))
    opt = stage.optimizer
    optimizer = torch.optim.AdamW(codec.parameters(), lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    generator = torch.Generator().manual_seed(curriculum.seed)
    last = min(stage.budget.steps, run.max_steps or stage.budget.steps)
    history = []
    for step in range(1, last + 1):
        started = time.perf_counter()
        picks = torch.randint(0, len(mels), (CLIPS_PER_STEP,), generator=generator).tolist()
        parts = [codec.mel_loss(_crop(mels[i], generator)) for i in picks]
        loss = sum(p[0] for p in parts) / len(parts)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(codec.parameters(), opt.grad_clip)
        optimizer.step()
        metrics = {"loss": float(loss), "loss/codec_mel_l1": float(sum(p[1]["mel_l1"] for p in parts) / len(parts)),
                   "loss/codec_commit": float(sum(p[1]["commit"] for p in parts) / len(parts)),
                   "grad_norm": float(grad_norm), "lr": opt.lr, "step_s": time.perf_counter() - started}  # fmt: skip
        history.append(metrics)
        if run.on_step:
            run.on_step(step, metrics)
    meta = {"preset": curriculum.preset, "preset_overrides": {"rope_theta": stage.rope_theta,
            "seq_length": stage.seq_length}, "curriculum": curriculum.name, "stage": stage.name, "step": last,
            "global_sequences": 0, "data_parallel": 1}  # fmt: skip
    saved = save_checkpoint(run.out, model, {"step": last}, meta, files={"tokenizer.json": run.tokenizer})
    if run.checkpoint_uri:
        from components.training.checkpoint_store import publish_from_rank0

        publish_from_rank0(saved, run.checkpoint_uri)
    log.info("codec stage %s: %d steps on %d clips, mel L1 %.3f -> %.3f", stage.name, last, len(mels),
             history[0]["loss/codec_mel_l1"], history[-1]["loss/codec_mel_l1"])  # fmt: skip
    return StageResult(stage.name, last, history[-1]["loss"], saved, 0.0, 0, history,
                       checkpoint_uri=run.checkpoint_uri)  # fmt: skip
