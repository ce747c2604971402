"""ModalityBridge: encoder embeddings into the LLM's layout and their gradients back (REFERENCE.md section 7).

With modality-decoupled parallelism the ranks of one LLM model-parallel group (tensor / context parallel:
ranks that hold the *same* batch) split that batch's images and clips between them for the encoders
(`owned_slice`), so no encoder work is repeated. The LLM, however, needs every feature vector of the batch
to assemble the full-sequence input embedding, and then only its own sequence slice (context parallel).

    bridge = ModalityBridge(group, num_chunks=4)
    mine = bridge.owned_slice(len(visuals))                  # the visual inputs this rank encodes
    features = bridge.gather(vit_features_of(visuals[mine]))  # every rank: all features, in batch order
    emb = assemble(text_emb, features)                        # full sequence [S, B, H]
    local = bridge.split_sequence(emb)                        # this rank's contiguous S / group slice

Gradients are exact and bitwise deterministic (no floating-point reduction happens in the bridge):
`split_sequence`'s backward all-gathers the slices' gradients, so every rank holds the identical
gradient of the full embedding, and `gather`'s backward then takes this rank's own rows. The same holds
when the split is megatron's sequence-parallel scatter (whose backward also all-gathers) or when there is
no split at all (tensor parallel without SP: every rank backpropagates the identical full gradient).

Chunked: each collective moves `num_chunks` row blocks in turn through a staging buffer of
1/num_chunks of the gathered size, so the bridge's temporary memory is a fraction 1/num_chunks of the
whole (measured in tests/model/test_modality_bridge.py); the outputs themselves are what the LLM needs.
A group of one rank is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist

from model.distributed import collective_device


class ModalityBridge:
    def __init__(self, group: dist.ProcessGroup | None = None, num_chunks: int = 1,
                 encoder_group: dist.ProcessGroup | None = None):  # fmt: skip
        """`group`: the ranks that hold the same batch; `encoder_group`: every rank of the sharded encoders'
        mesh (they agree on a number of encoder calls); None = the whole job (every rank runs the encoders)."""
        if num_chunks < 1:
            raise ValueError(f"ModalityBridge num_chunks must be >= 1, got {num_chunks}")
        self.group = group
        self.encoder_group = encoder_group
        self.num_chunks = num_chunks
        self.size = dist.get_world_size(group) if dist.is_initialized() else 1
        self.rank = dist.get_rank(group) if dist.is_initialized() else 0

    def owned_slice(self, num_items: int) -> slice:
        """The contiguous share of `num_items` inputs (images, clips) this rank encodes (balanced by count)."""
        base, extra = divmod(num_items, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def encode(self, items: list, encoder: Callable[[list], list[torch.Tensor]], probe: Callable[[], list]
               ) -> list[torch.Tensor]:  # fmt: skip
        """Every item's features on every rank, each rank encoding only its `owned_slice` of `items`.

        FSDP-sharded encoders must run forward and backward the same number of times on every rank of
        their mesh (all ranks: each call all-gathers parameters, each backward reduce-scatters gradients).
        The encoder takes a rank's items in one call, so a rank with nothing to encode encodes `probe()` (a
        minimal input) instead and contributes zero rows of it: the graph still reaches the encoder, whose
        gradient from that call is exactly zero.
        """
        mine = items[self.owned_slice(len(items))]
        outputs = encoder(mine) if mine else []
        local = torch.cat(outputs) if outputs else torch.cat(encoder(probe()))[:0]
        gathered = self.gather(local) if self.size > 1 else local
        if not items:
            return [gathered]  # zero rows, still attached to the encoder's graph
        sizes = self._item_rows(items, [o.shape[0] for o in outputs])
        return list(gathered.split(sizes))

    def _item_rows(self, items: list, mine: list[int]) -> list[int]:
        """Feature rows of every item (each rank knows only its own): one small all-gather."""
        if self.size == 1:
            return mine
        share = self.owned_slice(len(items))
        rows = torch.zeros(len(items), dtype=torch.long, device=collective_device())
        rows[share] = torch.tensor(mine, dtype=torch.long, device=rows.device)
        dist.all_reduce(rows, group=self.group)
        return rows.tolist()

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """[n_rank, H] per rank -> [sum of n, H] on every rank (rank order); backward: own rows."""
        if self.size == 1:
            return local
        return _Gather.apply(local, self)

    def split_sequence(self, full: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's contiguous 1/size slice of `full` along `dim`; backward all-gathers the gradient."""
        if self.size == 1:
            return full
        if full.shape[dim] % self.size:
            raise ValueError(f"sequence length {full.shape[dim]} is not divisible by the bridge's {self.size} ranks")
        return _SplitSequence.apply(full, dim, self)

    def _all_gather_rows(self, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows of every rank concatenated, moved in `num_chunks` blocks of ceil(max(counts)/num_chunks) rows."""
        block = max(1, math.ceil(max(counts) / self.num_chunks))
        out = local.new_empty(sum(counts), *local.shape[1:])
        offsets = [sum(counts[:r]) for r in range(self.size)]
        staging = [local.new_empty(block, *local.shape[1:]) for _ in range(self.size)]
        send = local.new_empty(block, *local.shape[1:])
        for start in range(0, max(counts), block):
            mine = local[start : start + block]
            send[: mine.shape[0]] = mine  # the tail of `send` is padding nobody reads
            dist.all_gather(staging, send, group=self.group)
            for rank, received in enumerate(staging):
                rows = max(0, min(block, counts[rank] - start))
                out[offsets[rank] + start : offsets[rank] + start + rows] = received[:rows]
        return out

    def _counts(self, rows: int) -> list[int]:
        device = collective_device()
        counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.size)]
        dist.all_gather(counts, torch.tensor([rows], device=device), group=self.group)
        return [int(c) for c in counts]


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, bridge: ModalityBridge) -> torch.Tensor:
        counts = bridge._counts(local.shape[0])
        ctx.start, ctx.rows = sum(counts[: bridge.rank]), local.shape[0]
        return bridge._all_gather_rows(local.contiguous(), counts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank holds the identical gradient of the gathered features (see the module docstring).
        return grad[ctx.start : ctx.start + ctx.rows], None


class _SplitSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, full: torch.Tensor, dim: int, bridge: ModalityBridge) -> torch.Tensor:
        ctx.dim, ctx.bridge = dim, bridge
        return full.chunk(bridge.size, dim=dim)[bridge.rank].contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        bridge, dim = ctx.bridge, ctx.dim
        rows = grad.movedim(dim, 0).contiguous()
        full = bridge._all_gather_rows(rows, [rows.shape[0]] * bridge.size)
        return full.movedim(0, dim), None, None
