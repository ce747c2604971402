"""Run one curriculum stage on 1..N processes: the training core behind `omnistage train`.

    result = run_stage(StageRun(curriculum, "stage0-text", {"demo": Path("work/datasets/demo")},
                                tokenizer=Path("work/tokenizer.json"), out=Path("work/runs/x/stage0-text")))

Builds the preset with the stage's RoPE base and sequence length, initialises from the previous stage's
checkpoint (weights only) or resumes its own (weights, optimizer, scheduler, RNG, data position),
freezes what the stage does not train, streams the stage's task-family mixture from the shards, packs
samples into fixed-length sequences, and trains with the stage's loss weights. Deterministic for a seed.

One process or many: started by torchrun (`omnistage train --nproc-per-node N`, or a cluster launcher
on every node) the same loop trains in parallel. Each optimizer step consumes `global_batch_size`
packed sequences; each data-parallel rank trains on its slice as micro-batches of `micro_batch_size`
(components.training.data_parallel), and the step runs on Megatron-Core's DDP, optimizer, LR scheduler
and schedule with a globally normalised loss (components.training.megatron_step): the same losses and
gradients as one process on the same global batch. A token budget becomes
`budget.tokens // (global_batch_size * seq_length)` steps. The stage's `parallel` block sets tensor
(with sequence parallel), expert and pipeline parallelism (model.omni.OmniModel); data parallel is what
the world size leaves. Trained encoders are not part of megatron's DDP: they are FSDP2-sharded over the
ranks of the first pipeline stage, whatever the LLM's layout, and reach the LLM through a ModalityBridge
(modality-decoupled parallelism, components.training.encoder_sharding). Context parallel splits each
assembled sequence over the CP ranks (model.context_parallel) with the local attention; it is refused at
start on Transformer Engine attention (packed THD sequences not built), as is a world size the plan does
not divide.
The stage's `precision` (fp32, or bf16: Megatron mixed precision with fp32 encoders,
components.training.precision) decides the dtype the LLM is built and trained in.
Micro-batches are padded to the stage's sequence length (fixed shapes between pipeline
stages). Metrics are all-reduced, so `on_step` sees global values; call it (tracking) on rank 0 only.

A corrupt sample or shard is skipped and counted (`data/skipped_corrupt`, `data/missing_shards`), never a
crash. Checkpoints: see components.training.checkpoint (Megatron dist_checkpointing weights + per-rank
training state, folder swap on rank 0). The global sample cursor is saved with them, so a stage saved at
one data-parallel size resumes at another on the next unseen sequence.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import webdataset as wds
from megatron.core import parallel_state
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from components.specs.curriculum import CurriculumSpec, StageSpec
from components.training.checkpoint import (
    checkpoint_dir,
    load_optimizer,
    load_train_state,
    load_weights,
    save_checkpoint,
)
from components.training.checkpoint_layout import CHECKPOINT_DIR
from components.training.checkpoint_store import local_checkpoint, publish_from_rank0, restore_for_resume
from components.training.ctc_probe import ctc_greedy_wer
from components.training.data_parallel import launch_world, plan_data_parallel, total_steps
from components.training.encoder_sharding import ShardedEncoders, trains_beyond_encoders
from components.training.megatron_step import (
    all_reduce_sum,
    build_optimizer,
    check_loss_weights,
    from_last_stage,
    train_step,
    wrap_model,
)
from components.training.mixture import MixtureSampler
from components.training.packing import CarryOverPacker
from components.training.precision import params_dtype, with_precision
from components.training.pseudo_speech import PSEUDO_ASR, PSEUDO_AV, pseudo_asr_samples, pseudo_av_samples
from components.training.render import RenderedSample, SpeechCoder, render_samples, task_family, waveform
from components.training.speech_render import SPEECH_RESPONSE, SPEECH_SOURCE, render_speech_response
from model import tokenizer as tok
from model.codec import AudioCodec
from model.config import get_preset
from model.distributed import init_parallel, training_device
from model.llm.moe import BiasControllerConfig, ExpertBiasController
from model.omni import IGNORE, TEXT_LOSS_CLASSES, OmniBatch, OmniModel

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
    on_step: Callable[[int, dict], None] | None = None  # tracking callback: (step, metrics), global metrics
    # tests: (step, named gradients after the data-parallel reduction, before the optimizer step)
    inspect_grads: Callable[[int, dict[str, torch.Tensor]], None] | None = None
    checkpoint_uri: str | None = None  # publish every save there too (components.training.checkpoint_store)
    # append each step's global batch ({"step", "keys"} per JSON line) here, rank 0 only: which samples
    # trained when, across restarts (a resumed run repeats the steps after its checkpoint, with equal keys)
    sample_log: Path | None = None


@dataclass
class StageResult:
    stage: str
    steps: int
    final_loss: float
    checkpoint: Path
    packing_efficiency: float
    skipped_too_long: int
    history: list[dict] = field(default_factory=list)
    data_order: list[list[str]] = field(default_factory=list)  # sample keys of each step's global batch
    data_problems: dict[str, int] = field(default_factory=dict)
    local_order: list[list[str]] = field(default_factory=list)  # the keys this rank trained on at each step
    global_sequences: int = 0  # the global sample cursor: packed sequences consumed since the stage began
    router_biases: list[torch.Tensor] = field(default_factory=list)  # per MoE layer, at the end (this rank)
    checkpoint_uri: str | None = None  # where the final checkpoint was published, when it was
    encoder_parallel: str = "replicated"  # how the encoders were parallelised (encoder_parallelism)
    probes: dict[str, float] = field(default_factory=dict)  # held-out checks at the end (ctc_probe)


def module_groups(model: OmniModel) -> dict[str, list[torch.nn.Parameter]]:
    """Curriculum module names -> parameters (see components.specs.curriculum.MODULES); a module this
    pipeline stage does not hold has none here."""

    def params(module, exclude_projector: bool | None = None) -> list[torch.nn.Parameter]:
        if module is None:
            return []
        return [p for n, p in module.named_parameters()
                if exclude_projector is None or n.startswith("projector.") != exclude_projector]  # fmt: skip

    return {
        "llm": params(model.llm),
        "vit": params(model.vit, exclude_projector=True),
        "vit_projector": params(model.vit, exclude_projector=False),
        "audio_encoder": params(model.audio_encoder, exclude_projector=True),
        "audio_encoder_projector": params(model.audio_encoder, exclude_projector=False),
        "audio_embeddings": params(model.audio_embeddings),
        "audio_heads": params(model.audio_heads),
        "codec": params(model.codec),  # trained by its own stage (components.training.codec_stage)
    }


def encoder_parallelism(model: OmniModel) -> str:
    """How this rank holds the encoders (ViT, audio encoder, codec), read off their parameters so reports
    stay true whatever wraps them: "fsdp2" when they are sharded DTensors (torch fully_shard), otherwise
    "replicated" (every rank holds them whole; megatron DDP all-reduces their gradients over data parallel)."""
    from torch.distributed.tensor import DTensor

    encoders = [m for m in (model.vit, model.audio_encoder, model.codec) if m is not None]
    sharded = any(isinstance(p, DTensor) for m in encoders for p in m.parameters())
    return "fsdp2" if sharded else "replicated"


def apply_freezing(model: OmniModel, stage: StageSpec) -> int:
    """Train exactly the stage's `train` modules; returns the number of trainable parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    groups = module_groups(model)
    for name in stage.train:
        for param in groups[name]:
            param.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_samples(datasets: dict[str, Path], stage: StageSpec, tokenizer, preset, seed: int,
                 codec: AudioCodec | None = None) -> tuple[dict[str, RenderedSample], dict, dict]:  # fmt: skip
    """Render the stage's training samples; returns (samples by key, keys by family, problem counts).

    `codec` (the model's, trained by the codec stage) turns speech into codec tokens where the stage asks
    for them: speech input with `speech_input: codec`, and the `speech_response` family built from the
    assistant's speech clips (SPEECH_SOURCE).
    """
    samples: dict[str, RenderedSample] = {}
    wants_codes = stage.speech_input == "codec" or SPEECH_RESPONSE in stage.data.mixture
    if wants_codes and codec is None:
        raise ValueError(f"stage '{stage.name}' feeds speech as codec tokens: load_samples needs the model's codec")
    coder = SpeechCoder(partial(_encode_on, codec.eval()), codec.cfg.frame_rate) if wants_codes else None
    input_coder = coder if stage.speech_input == "codec" else None
    # Only what the mixture draws is rendered (decoding frames and audio is most of a stage's start-up):
    # its families, the assistant's clips that speech responses are made of and the ASR clips of pseudo-speech.
    wants_pseudo = PSEUDO_ASR in stage.data.mixture
    wants_pseudo_av = PSEUDO_AV in stage.data.mixture
    needed = (set(stage.data.mixture) | ({SPEECH_SOURCE} if SPEECH_RESPONSE in stage.data.mixture else set())
              | ({"asr"} if wants_pseudo else set()) | ({"av_qa"} if wants_pseudo_av else set()))  # fmt: skip
    asr_clips: list[RenderedSample] = []  # what pseudo-speech takes its layouts from
    av_clips: list[tuple[RenderedSample, dict]] = []  # pseudo_av's frames and timed segments
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
        # Every rank reads every shard (no node splitting): each draws the whole global sequence stream
        # and needs every sample's length for it (components.training.data_parallel).
        every_shard = wds.WebDataset(shards, shardshuffle=False, handler=skip, empty_check=False,
                                     nodesplitter=lambda urls: urls)  # fmt: skip
        for raw in every_shard:
            try:
                if "json" not in raw:
                    continue
                raw["json"] = json.loads(raw["json"])  # parsed once; render_samples takes the dict
                if raw["json"].get("split") != "train" or task_family(raw["json"]) not in needed:
                    continue
                rendered = render_samples(raw, tokenizer, preset.vit, preset.audio_encoder, speech_coder=input_coder)
                spoken = _speech_response(raw, tokenizer, preset, coder) if coder is not None else None
            except Exception as exc:  # a damaged member inside a readable tar (bad JSON, JPEG, WAV)
                skip(exc)
                continue
            for one in [*rendered, spoken]:  # one per question of a QA clip, and the clip said back
                if one is not None and one.task_family in stage.data.mixture:
                    samples[one.key] = one
            if wants_pseudo:
                asr_clips += [one for one in rendered if one.task_family == "asr"]
            if wants_pseudo_av and rendered and rendered[0].task_family == "av_qa":
                av_clips.append((rendered[0], raw["json"].get("labels", {})))
    if SPEECH_RESPONSE in stage.data.mixture and not any(s.task_family == SPEECH_RESPONSE for s in samples.values()):
        raise ValueError(f"stage '{stage.name}' draws {SPEECH_RESPONSE}, made of '{SPEECH_SOURCE}' clips (the "
                         f"assistant's voice with its transcript), and datasets {sorted(stage.data.datasets)} hold "
                         f"none in their train split: add a source with task_family: {SPEECH_SOURCE}, or take "
                         f"{SPEECH_RESPONSE} out of the stage's mixture")  # fmt: skip
    if wants_pseudo:  # pseudo_asr_samples says clearly when the datasets hold no ASR clip to build on
        samples |= {one.key: one for one in pseudo_asr_samples(asr_clips, tokenizer, seed=seed)}
    if wants_pseudo_av:
        samples |= {one.key: one for one in pseudo_av_samples(av_clips, tokenizer, seed=seed)}
    by_family: dict[str, list[str]] = {}
    for key, sample in samples.items():
        by_family.setdefault(sample.task_family, []).append(key)
    return samples, by_family, problems


def _encode_on(codec: AudioCodec, wave: torch.Tensor) -> torch.Tensor:
    """Codes of a CPU waveform by the codec wherever it lives (the GPU in a CUDA run), back on the CPU."""
    return codec.encode(wave.to(next(codec.parameters()).device)).cpu()


def _speech_response(raw: dict, tokenizer, preset, coder: SpeechCoder) -> RenderedSample | None:
    """A clip of the assistant's voice as a speech-response sample (components.training.speech_render);
    None for other clips."""
    meta = raw["json"]
    transcript = meta.get("labels", {}).get("transcript")
    if meta.get("task_family") != SPEECH_SOURCE or not transcript or "wav" not in raw:
        return None
    with torch.no_grad():
        codes = coder.encode(waveform(raw, preset.audio_encoder.sample_rate))
    return render_speech_response(meta["key"], transcript, codes, tokenizer)


def make_batch(parts: list[RenderedSample]) -> OmniBatch:
    """One packed sequence as a [1, S] batch."""
    return make_microbatch([parts])


def make_microbatch(rows: list[list[RenderedSample]], pad_id: int = 0, width: int | None = None) -> OmniBatch:
    """Packed sequences as one [rows, S] batch; shorter rows are padded (no targets, their own document)
    to the longest row, or to `width` (the stage's sequence length: pipeline stages exchange fixed shapes).

    Carries each text label's loss class (the renderer's `text_loss`) and, when any sample has them, the
    codec codes, their next-step targets and the first-audio-token positions (model.omni's loss table).
    """
    width = max([sum(len(p) for p in parts) for parts in rows] + [width or 0])
    ids, labels, documents, classes, visuals, audio, transcripts = [], [], [], [], [], [], []
    books = next((p.audio_codes.shape[1] for parts in rows for p in parts if p.audio_codes is not None), 0)
    codes = torch.full((len(rows), width, max(books, 1)), -1, dtype=torch.long)
    code_labels = torch.full_like(codes, IGNORE)
    first_audio = torch.zeros(len(rows), width, dtype=torch.bool)
    document = 0
    for row, parts in enumerate(rows):
        row_ids = [i for p in parts for i in p.input_ids]
        row_docs = [document + i for i, p in enumerate(parts) for _ in range(len(p))]
        document += len(parts) + 1  # numbered across rows: the loss sums per document over the whole batch
        pad = width - len(row_ids)
        ids.append(row_ids + [pad_id] * pad)
        labels.append([t for p in parts for t in p.labels] + [IGNORE] * pad)
        classes.append([TEXT_LOSS_CLASSES.index(p.text_loss) for p in parts for _ in range(len(p))] + [0] * pad)
        documents.append(row_docs + [document - 1] * pad)
        visuals += [v for p in parts for v in p.visuals]
        audio += [a for p in parts for a in p.audio_features]
        offset = 0
        for part in parts:
            if part.audio_codes is not None:
                codes[row, offset : offset + len(part)] = part.audio_codes
            if part.audio_labels is not None:
                code_labels[row, offset : offset + len(part)] = part.audio_labels
            if part.first_audio is not None:
                first_audio[row, offset + part.first_audio] = True
            offset += len(part)
        transcripts += [torch.tensor(t, dtype=torch.long) for p in parts
                        for t in (p.ctc_targets or [[]] * len(p.audio_features))]  # fmt: skip
    speech = books > 0
    return OmniBatch(torch.tensor(ids), torch.tensor(labels), audio_codes=codes if speech else None,
                     audio_labels=code_labels if speech and bool((code_labels != IGNORE).any()) else None,
                     visuals=visuals or None, audio_features=audio or None, document_ids=torch.tensor(documents),
                     loss_classes=torch.tensor(classes),
                     first_audio=first_audio if bool(first_audio.any()) else None,
                     ctc_targets=transcripts or None)  # fmt: skip


def _family_sums(rows: list[list[RenderedSample]], token_losses: torch.Tensor | None,
                 families: list[str]) -> torch.Tensor:  # fmt: skip
    """[families, 2] (text-loss sum, target tokens) of one micro-batch, per task family."""
    sums = torch.zeros(len(families), 2, dtype=torch.float64)
    if token_losses is None:  # an encoder-only step (ctc) has no text losses to split
        return sums
    token_losses = token_losses.detach().cpu()
    for row, parts in enumerate(rows):
        offset = 0
        for part in parts:
            counted = torch.tensor(part.labels) != IGNORE
            segment = token_losses[row, offset : offset + len(part)][counted]
            offset += len(part)
            sums[families.index(part.task_family)] += torch.tensor([float(segment.sum()), segment.numel()])
    return sums


def run_stage(run: StageRun) -> StageResult:
    curriculum, stage = run.curriculum, run.curriculum.stage(run.stage)
    if stage.train == ["codec"]:
        from components.training.codec_stage import run_codec_stage

        return run_codec_stage(run)
    check_loss_weights(stage.name, stage.loss_weights)
    plan = plan_data_parallel(stage, *launch_world())
    stage_steps = total_steps(stage)
    preset = get_preset(curriculum.preset, llm={"rope_theta": stage.rope_theta, "seq_length": stage.seq_length})
    sizes = stage.parallel.megatron_sizes()  # megatron's sizes; encoders: build
    init_parallel(sizes, seed=curriculum.seed)
    assert plan.dp_rank == parallel_state.get_data_parallel_rank(), "rank order differs from megatron's"
    torch.manual_seed(curriculum.seed)
    tokenizer = tok.load_tokenizer(run.tokenizer)
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD),
                      sizes, params_dtype(stage.precision), stage.audio_input).to(training_device())  # fmt: skip
    if run.resume and run.checkpoint_uri and not _has_checkpoint(run.out):  # a retried pod on a fresh node
        restore_for_resume(run.checkpoint_uri, Path(run.out) / CHECKPOINT_DIR)
    resuming = run.resume and _has_checkpoint(run.out)
    # Weights first, samples after: stages that feed speech as codec tokens encode it with the model's codec,
    # which must be the trained one (the stage's own checkpoint when resuming, else the previous stage's).
    if resuming:
        load_weights(run.out, model, curriculum.preset)
    elif run.init_from is not None:  # a retried task resumes only once it has saved
        load_weights(local_checkpoint(run.init_from), model, curriculum.preset)
    trainable = apply_freezing(model, stage)
    module = with_precision(model)  # bf16: megatron's Float16Module (components.training.precision)
    # Trained encoders: FSDP2 over their own mesh, outside megatron (components.training.encoder_sharding).
    encoders = ShardedEncoders.build(model, stage)
    with encoders.hidden_from_megatron() if encoders is not None else nullcontext():
        ddp = wrap_model(module)
        # with sharded encoders the clipping is joint (train_step), so megatron's own is off
        clip = 0.0 if encoders is not None else None
        optimizer, scheduler = build_optimizer(ddp, stage, stage_steps, clip_grad=clip)
    # A stage that trains encoders only (the CTC stage) leaves megatron's optimizer empty: no state to keep.
    megatron_state = optimizer if trains_beyond_encoders(stage) else None
    # Router load counts are summed over tensor x data x context parallel (the ranks that route disjoint
    # tokens through the same layers: sequence slices and data slices), so every rank moves its biases
    # identically and the biases follow the global batch's load.
    routing_group = parallel_state.get_tensor_and_data_parallel_group(with_context_parallel=True)
    controller = ExpertBiasController(model.llm, BiasControllerConfig(preset.llm.target_ffn_experts_per_token),
                                      group=routing_group if routing_group.size() > 1 else None)  # fmt: skip
    samples, by_family, problems = load_samples(run.datasets, stage, tokenizer, preset, curriculum.seed,
                                                codec=model.codec)  # fmt: skip
    if not samples:
        raise ValueError(f"stage '{stage.name}': no readable training samples of {sorted(stage.data.mixture)} in "
                         f"{[str(run.datasets[d]) for d in stage.data.datasets]}")  # fmt: skip
    sampler = MixtureSampler(by_family, stage.data.mixture, seed=curriculum.seed)
    packer = CarryOverPacker(stage.seq_length)
    step, used, capacity, skipped, history, order, local_order = 0, 0, 0, 0, [], [], []
    if resuming:
        state = load_train_state(run.out)
        if megatron_state is not None:
            load_optimizer(run.out, model, optimizer)
        if encoders is not None:
            encoders.load_state_dict(state.get("encoder_optimizer"), str(checkpoint_dir(run.out)))
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        packer.load_state_dict(state["packer"])
        controller.load_state_dict(state["bias_controller"])
        torch.set_rng_state(state["rng"])
        get_cuda_rng_tracker().set_states(state["megatron_rng"])
        step, used, capacity, skipped = state["step"], *state["counters"]
        cursor = state["cursor"]
        log.info("resumed stage %s at step %d from %s: next global sequence %d (saved at data parallel %d, "
                 "now %d; global batch %d)", stage.name, step, checkpoint_dir(run.out), cursor["sequences"],
                 cursor["data_parallel"], plan.dp, plan.global_batch)  # fmt: skip
        if cursor["global_batch"] != plan.global_batch:
            log.warning("stage %s: global_batch_size changed from %d to %d since the checkpoint; the data stream "
                        "continues at sequence %d", stage.name, cursor["global_batch"], plan.global_batch,
                        cursor["sequences"])  # fmt: skip
    sequences = state["cursor"]["sequences"] if resuming else 0
    log.info("stage %s: %d trainable parameters, %d samples, %d process(es): data parallel %d, %d micro-batch(es) "
             "of %d per rank per step", stage.name, trainable, len(samples), plan.world, plan.dp,
             plan.num_microbatches, plan.micro_batch)  # fmt: skip
    last_steps = min(stage_steps, run.max_steps or stage_steps)
    families = sorted(stage.data.mixture)

    def draw() -> tuple[str, int]:  # the mixture's next sample that fits the sequence length
        nonlocal skipped
        while True:
            _, key = sampler.next()
            if len(samples[key]) <= stage.seq_length:
                return key, len(samples[key])
            skipped += 1

    while step < last_steps:
        # Every rank draws the whole global batch (the same on all), then trains on its own slice.
        global_batch = [[samples[key] for key in packer.next(draw)] for _ in range(plan.global_batch)]
        order.append([p.key for parts in global_batch for p in parts])
        mine = plan.local_microbatches(global_batch)
        local_order.append([p.key for rows in mine for parts in rows for p in parts])
        used_now = sum(len(p) for parts in global_batch for p in parts)
        used, capacity = used + used_now, capacity + stage.seq_length * plan.global_batch
        started = time.perf_counter()
        batches = [make_microbatch(rows, width=stage.seq_length) for rows in mine]
        out = train_step(ddp, optimizer, scheduler, batches, stage.loss_weights,
                         partial(run.inspect_grads, step + 1) if run.inspect_grads else None, encoders)  # fmt: skip
        ffn_experts = controller.step()
        step, sequences = step + 1, sequences + plan.global_batch
        family_sums = torch.zeros(len(families), 2, dtype=torch.float64)  # token losses live on the last stage
        for rows, losses in zip(mine, out.token_losses):
            family_sums += _family_sums(rows, losses, families)
        # token losses are whole sequences on every CP rank (OmniModel gathers them): sum over DP only
        per_family = from_last_stage(all_reduce_sum(family_sums, with_context_parallel=False))
        metrics = {"loss": out.losses["loss"], **{f"loss/{k}": v for k, v in out.losses.items() if k != "loss"},
                   "lr": scheduler.get_lr({}), "grad_norm": out.grad_norm,
                   "packing_efficiency": used / capacity, "ffn_experts_per_token": ffn_experts, "tokens": used,
                   "tokens_per_s": used_now / (time.perf_counter() - started), "sequences": sequences,
                   **{f"data/{k}": v for k, v in problems.items()},
                   **{f"loss/family/{f}": float(t / n) for f, (t, n) in zip(families, per_family) if n}}  # fmt: skip
        history.append(metrics)
        if run.sample_log and plan.rank == 0:
            with open(run.sample_log, "a") as ledger:
                ledger.write(json.dumps({"step": step, "keys": order[-1]}) + "\n")
        if run.on_step:
            run.on_step(step, metrics)
        if step % run.checkpoint_every == 0 or step == last_steps:
            train_state = {"scheduler": scheduler.state_dict(),
                           "encoder_optimizer": encoders.state_dict() if encoders is not None else {},
                           "sampler": sampler.state_dict(), "packer": packer.state_dict(),
                           "rng": torch.get_rng_state(), "megatron_rng": get_cuda_rng_tracker().get_states(),
                           "step": step, "bias_controller": controller.state_dict(),
                           "counters": (used, capacity, skipped),
                           "cursor": {"sequences": sequences, "global_batch": plan.global_batch,
                                      "data_parallel": plan.dp, "world": plan.world}}  # fmt: skip
            meta = {"preset": curriculum.preset, "preset_overrides": {"rope_theta": stage.rope_theta,
                    "seq_length": stage.seq_length}, "curriculum": curriculum.name, "stage": stage.name,
                    "step": step, "global_sequences": sequences, "data_parallel": plan.dp,
                    "audio_input": stage.audio_input}  # fmt: skip
            saved = save_checkpoint(run.out, model, train_state, meta, files={"tokenizer.json": run.tokenizer},
                                    optimizer=megatron_state)  # fmt: skip
            if run.checkpoint_uri:
                publish_from_rank0(saved, run.checkpoint_uri)
    probes = {}
    if stage.loss_weights.get("ctc"):
        wer = ctc_greedy_wer(model, run.datasets, tokenizer, preset)
        if wer is not None:
            probes["ctc_greedy_wer"] = wer
            log.info("stage %s: greedy CTC WER %.3f on held-out ASR clips", stage.name, wer)
    return StageResult(stage.name, step, history[-1]["loss"] if history else float("nan"), checkpoint_dir(run.out),
                       used / capacity if capacity else 0.0, skipped, history, order, problems, local_order,
                       sequences, [r.expert_bias.clone() for r in controller.routers], run.checkpoint_uri,
                       encoder_parallelism(model), probes)  # fmt: skip


def _has_checkpoint(out: Path) -> bool:
    try:
        checkpoint_dir(out)
    except FileNotFoundError:
        return False
    return True
