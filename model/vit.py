"""LongCat-ViT: one vision transformer for images and video, at native resolution (REFERENCE.md section 3).

- 3D patch embedding with temporal patch 2: a still image is repeated to 2 frames, video frames are
  taken in pairs, so one token covers 2 x 14 x 14 pixels.
- Images of different sizes share one packed sequence; attention is block-diagonal per temporal unit
  (one image, or one frame pair of a video), computed unit by unit (batched) rather than with a dense
  mask, with 2D RoPE over (row, column) of the patch grid.
- Blocks: RMSNorm, QK-norm, SwiGLU, LayerScale on both residual branches.
- Projector: two horizontally adjacent patches are merged, then a pre-norm MLP maps into the LLM width,
  so an image gives 0.5 * (H/14) * (W/14) LLM tokens.

Plain PyTorch on purpose: the encoders are sharded with FSDP2/HSDP, not megatron (modality-decoupled
parallelism, REFERENCE.md section 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    hidden_size: int = 1280
    intermediate_size: int = 3456  # SwiGLU: 5184 * 2/3
    num_layers: int = 32
    num_heads: int = 16
    patch_size: int = 14
    temporal_patch: int = 2
    in_channels: int = 3
    merge: int = 2  # horizontally adjacent patches merged by the projector
    out_hidden_size: int = 6144  # the LLM width
    layerscale_init: float = 0.1
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        head_dim = self.hidden_size // self.num_heads
        if self.hidden_size % self.num_heads or head_dim % 4:
            raise ValueError("hidden_size / num_heads must be an integer divisible by 4 (2D RoPE halves)")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_2d(rows: torch.Tensor, cols: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [tokens, head_dim]: the first half of each head rotates with the row, the second with the column."""
    quarter = head_dim // 4
    inv = 1.0 / (theta ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    angles = torch.cat([rows[:, None].float() * inv, cols[:, None].float() * inv], dim=-1)  # [N, head_dim/2]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, groups: list[tuple[int, int]]):
        """`groups`: (units, tokens per unit) per input, in token order; attention stays within a unit."""
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, self.head_dim).unbind(1)
        q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = cos[:, None], sin[:, None]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        # Units of one input have equal size: batch them ([units, heads, tokens, dim]) instead of a dense
        # block-diagonal mask over the whole packed sequence, which costs (sum of units)^2 not sum(unit^2).
        outs, start = [], 0
        for units, size in groups:
            end = start + units * size
            q_g, k_g, v_g = (t[start:end].view(units, size, self.num_heads, self.head_dim).transpose(1, 2)
                             for t in (q, k, v))  # fmt: skip
            outs.append(F.scaled_dot_product_attention(q_g, k_g, v_g).transpose(1, 2).reshape(end - start, -1))
            start = end
        return self.proj(torch.cat(outs))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.ls1 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layerscale_init))
        self.ls2 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layerscale_init))

    def forward(self, x, cos, sin, groups):
        x = x + self.ls1 * self.attn(self.norm1(x), cos, sin, groups)
        return x + self.ls2 * self.mlp(self.norm2(x))


class Projector(nn.Module):
    """Merge `merge` horizontally adjacent patches, pre-norm, MLP into the LLM width."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.merge = cfg.merge
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.merge * cfg.hidden_size, cfg.out_hidden_size)
        self.fc2 = nn.Linear(cfg.out_hidden_size, cfg.out_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Tokens are laid out row-major within each unit and widths are multiples of `merge`, so
        # consecutive groups of `merge` tokens are horizontal neighbours.
        x = self.norm(x).reshape(-1, self.merge * x.shape[-1])
        return self.fc2(F.gelu(self.fc1(x)))


@dataclass
class VisualInput:
    """One image ([3, H, W]) or video ([T, 3, H, W], T even); H and W multiples of 14 and 28."""

    pixels: torch.Tensor

    def as_frames(self) -> torch.Tensor:
        frames = self.pixels[None] if self.pixels.dim() == 3 else self.pixels
        if frames.shape[0] == 1:
            frames = frames.repeat(2, 1, 1, 1)  # an image is two identical frames
        if frames.shape[0] % 2:
            frames = torch.cat([frames, frames[-1:]])  # complete the last temporal unit
        return frames


class LongCatViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        p, t = cfg.patch_size, cfg.temporal_patch
        self.patch_embed = nn.Conv3d(
            cfg.in_channels, cfg.hidden_size, kernel_size=(t, p, p), stride=(t, p, p), bias=False
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.projector = Projector(cfg)

    def patchify(self, inputs: list[VisualInput]):
        """Packed patch tokens plus each token's (row, col) and temporal-unit id."""
        tokens, rows, cols, units, grids = [], [], [], [], []
        unit = 0
        for item in inputs:
            frames = item.as_frames()  # [T, C, H, W]
            _, _, h, w = frames.shape
            if h % self.cfg.patch_size or w % (self.cfg.patch_size * self.cfg.merge):
                raise ValueError(f"frame {h}x{w} is not on the {self.cfg.patch_size}x{self.cfg.patch_size * 2} grid: "
                                 "resize with components.ingest.sampling.native_resolution")  # fmt: skip
            emb = self.patch_embed(frames.transpose(0, 1)[None])[0]  # [hidden, T/2, H/14, W/14]
            num_t, gh, gw = emb.shape[1:]
            tokens.append(emb.flatten(1).transpose(0, 1))  # unit-major, then row-major
            r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
            rows.append(r.flatten().repeat(num_t))
            cols.append(c.flatten().repeat(num_t))
            units.append(torch.arange(unit, unit + num_t).repeat_interleave(gh * gw))
            grids.append((num_t, gh, gw))
            unit += num_t
        return torch.cat(tokens), torch.cat(rows), torch.cat(cols), torch.cat(units), grids

    def forward(self, inputs: list[VisualInput]) -> list[torch.Tensor]:
        """LLM-width features per input: [temporal units * (H/14) * (W/14) / merge, out_hidden_size]."""
        x, rows, cols, units, grids = self.patchify(inputs)
        cos, sin = rope_2d(rows, cols, self.cfg.hidden_size // self.cfg.num_heads, self.cfg.rope_theta)
        groups = [(t, h * w) for t, h, w in grids]  # attention stays within one image / frame pair
        for block in self.blocks:
            x = block(x, cos, sin, groups)
        out = self.projector(self.norm(x))
        sizes = [t * h * w // self.cfg.merge for t, h, w in grids]
        return list(out.split(sizes))
