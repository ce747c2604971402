"""Stage checkpoints: the weights as a Megatron `dist_checkpointing` checkpoint, the training state beside it.

    OUT/checkpoint/weights/          dist_checkpointing (sharded tensors: loads at another TP/EP/PP layout)
    OUT/checkpoint/optimizer/        the optimizer state the same way, sharded like the weights it belongs to
    OUT/checkpoint/train_state.rankN.pt  scheduler, data position and global sample cursor,
                                     RNG (torch and megatron's tracker), counters: one file per rank
    OUT/checkpoint/meta.json         preset, the preset overrides the stage used, stage, step
    OUT/checkpoint/tokenizer.json    the tokenizer it was trained with (evaluation and serving need it)

A new checkpoint is written next to the old one and swapped in by renames, so a kill at any moment
leaves one complete checkpoint. With several processes every rank writes its weight shards and its
training state into the new folder; rank 0 alone creates the folder and swaps it in, with barriers
around both. Training state is loaded with `weights_only=True` (tensors and plain containers only: no
pickled objects from files another task wrote). After a change of data-parallel size a rank without
its own file reads rank 0's: what it holds is the same on every rank (the data position is the global
cursor); the optimizer state, which differs per tensor/pipeline/expert shard, is resharded by
dist_checkpointing like the weights, so a stage saved at TP=2 resumes at TP=1 with its Adam moments.
`checkpoint_dir(folder)` accepts either a stage output folder or the checkpoint folder itself.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from components.training.checkpoint_layout import CHECKPOINT_DIR, FORMAT, META, checkpoint_dir, read_meta

log = logging.getLogger(__name__)


def _fork_results_queue():
    # megatron's writer makes its results queue with a *spawn* Manager, which re-imports the training
    # entry point in a fresh interpreter (~8 s for every process that saves). A fork Manager is the
    # same queue without the re-import.
    # The queue outlives one save (megatron keeps it in a module global), and its manager process may not
    # outlive the next: in one pytest process a later stage's save intermittently died with EOFError on the
    # dead manager's proxy. A queue that no longer answers is replaced.
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    queue = filesystem_async._results_queue
    if queue is not None:
        try:
            queue.qsize()
            return queue
        except (EOFError, OSError):
            pass
    filesystem_async._results_queue = mp.get_context("fork").Manager().Queue()
    return filesystem_async._results_queue


def sharded_state_dict(model: nn.Module) -> dict:
    """The omni model's weights as sharded tensors: the LLM's own (TP/EP/PP-aware), the column-parallel audio
    heads' own, and the encoders (whole tensors, also when FSDP-sharded) and embeddings as replicated ones
    (present on the stage that holds them)."""
    from megatron.core import parallel_state
    from megatron.core.transformer.utils import ensure_metadata_has_dp_cp_group, make_sharded_tensors_for_checkpoint

    state = model.llm.sharded_state_dict(prefix="llm.")
    metadata = ensure_metadata_has_dp_cp_group(None)
    for name, module in model.named_children():
        if name == "llm":
            continue
        if isinstance(module, nn.ModuleList) and all(hasattr(m, "sharded_state_dict") for m in module):
            for index, part in enumerate(module):  # tensor-parallel layers describe their own sharding
                state.update(part.sharded_state_dict(prefix=f"{name}.{index}.", metadata=metadata))
        else:
            tensors = make_sharded_tensors_for_checkpoint(_whole(module.state_dict(keep_vars=True)), f"{name}.", {}, ())
            if name == "codec":  # held by every pipeline stage (each renders codes): one stage's copy is the main one
                for tensor in tensors.values():
                    tensor.replica_id = (parallel_state.get_pipeline_model_parallel_rank(), *tensor.replica_id[1:])
            state.update(tensors)
    return state


def _whole(state: dict) -> dict:
    """FSDP-sharded (DTensor) entries gathered to whole tensors (a collective over the encoders' mesh): the
    sharded encoders are saved like replicated ones, so any layout, one process and evaluation load them."""
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}


def _onto_sharded_parameters(model: nn.Module, state: dict) -> dict:
    """Whole loaded tensors -> DTensors laid out like the model's FSDP-sharded parameters (the encoders)."""
    from torch.distributed.tensor import distribute_tensor

    current = model.state_dict(keep_vars=True)
    return {k: distribute_tensor(v, current[k].device_mesh, current[k].placements)
            if hasattr(current.get(k), "device_mesh") else v for k, v in state.items()}  # fmt: skip


def save_checkpoint(out: Path, model: nn.Module, train_state: dict, meta: dict,
                    files: dict[str, Path] | None = None, optimizer=None) -> Path:  # fmt: skip
    """Write OUT/checkpoint atomically (with copies of `files`, name -> path, and the megatron `optimizer`'s
    state when given); returns its folder."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    out = Path(out)
    final, tmp, old = out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.tmp", out / f"{CHECKPOINT_DIR}.old"
    rank = _rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "weights").mkdir(parents=True)
        if optimizer is not None:
            (tmp / "optimizer").mkdir()
    _barrier()  # the folder exists before any rank writes into it
    filesystem_async._get_write_results_queue = _fork_results_queue
    dist_checkpointing.save(sharded_state_dict(model), str(tmp / "weights"))
    if optimizer is not None:
        dist_checkpointing.save(optimizer.sharded_state_dict(sharded_state_dict(model)), str(tmp / "optimizer"))
    torch.save(train_state, tmp / f"train_state.rank{rank}.pt")
    _barrier()  # every rank's shards and state are written before the swap
    if rank == 0:
        for name, source in (files or {}).items():
            shutil.copyfile(source, tmp / name)
        (tmp / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=1))
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()  # no rank goes on (or reads the checkpoint) before the swap
    return final


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def load_weights(path: Path, model: nn.Module, expected_preset: str) -> dict:
    """Load a checkpoint's weights into `model` (any parallel layout); returns its meta."""
    from megatron.core import dist_checkpointing

    folder = checkpoint_dir(path)
    meta = read_meta(folder)
    if meta.get("preset") != expected_preset:
        raise ValueError(f"{folder} was trained with preset '{meta.get('preset')}', this run uses "
                         f"'{expected_preset}': initialise from a checkpoint of the same preset")  # fmt: skip
    state = _onto_sharded_parameters(model, dist_checkpointing.load(sharded_state_dict(model), str(folder / "weights")))
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith("._extra_state")]
    if real_missing or unexpected:
        raise ValueError(f"{folder}: weights do not match the model (missing {real_missing[:5]}, "
                         f"unexpected {unexpected[:5]})")  # fmt: skip
    return meta


def load_optimizer(path: Path, model: nn.Module, optimizer) -> None:
    """Load a checkpoint's optimizer state into the megatron `optimizer` (any parallel layout)."""
    from megatron.core import dist_checkpointing

    folder = checkpoint_dir(path) / "optimizer"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder.parent} has no optimizer state (written by an older version): resume "
                                "is not possible; start the stage again or initialise from it (init_from)")  # fmt: skip
    sharded = optimizer.sharded_state_dict(sharded_state_dict(model), is_loading=True)
    optimizer.load_state_dict(dist_checkpointing.load(sharded, str(folder)))


def load_train_state(path: Path) -> dict:
    """This rank's training state; rank 0's when the checkpoint was written by fewer processes."""
    folder = checkpoint_dir(path)
    own = folder / f"train_state.rank{_rank()}.pt"
    if not own.is_file():
        log.warning("%s has no training state for rank %d (written by fewer processes): using rank 0's, "
                    "whose optimizer state and data cursor are the same on every rank", folder, _rank())  # fmt: skip
        own = folder / "train_state.rank0.pt"
    return torch.load(own, weights_only=True)
