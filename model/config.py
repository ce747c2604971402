"""Typed model configs and the named presets (`tiny`, `small`, `longcat-flash-omni`).

A preset is data: `get_preset("tiny", llm={"rope_theta": 5e6})` returns a copy with fields overridden,
which is how a curriculum stage changes RoPE base or sequence length. Every number of the full-size
preset comes from REFERENCE.md sections 2-4.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.audio_encoder import AudioEncoderConfig
from model.codec import AudioCodecConfig
from model.vit import ViTConfig


@dataclass(frozen=True)
class LLMConfig:
    """The LongCat-Flash text backbone."""

    num_layers: int
    """ScMoE layers; each holds two attention blocks and two dense FFNs."""
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int
    """Dense SwiGLU FFN width."""
    expert_ffn_hidden_size: int
    num_experts: int
    """Routed FFN experts."""
    num_zero_experts: int
    """Zero-computation (identity) experts."""
    topk: int
    routed_scaling_factor: float
    target_ffn_experts_per_token: float
    """What the bias controller steers the average number of activated FFN experts toward."""
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    vocab_size: int
    seq_length: int
    rope_theta: float = 1e7
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.topk > self.num_experts + self.num_zero_experts:
            raise ValueError(f"topk ({self.topk}) exceeds the number of experts")
        if not 0 <= self.target_ffn_experts_per_token <= self.topk:
            raise ValueError("target_ffn_experts_per_token must lie in [0, topk]")
        if self.q_lora_rank == self.kv_lora_rank + self.qk_rope_head_dim:
            raise ValueError("q_lora_rank must differ from kv_lora_rank + qk_rope_head_dim (see model/llm/mla.py)")


@dataclass(frozen=True)
class ModelPreset:
    name: str
    llm: LLMConfig
    vit: ViTConfig
    audio_encoder: AudioEncoderConfig
    codec: AudioCodecConfig

    def __post_init__(self) -> None:
        width = self.llm.hidden_size
        if self.vit.out_hidden_size != width or self.audio_encoder.output_size != width:
            raise ValueError(
                f"preset {self.name!r}: vit.out_hidden_size ({self.vit.out_hidden_size}) and "
                f"audio_encoder.output_size ({self.audio_encoder.output_size}) must equal llm.hidden_size ({width})"
            )


TINY_LLM = LLMConfig(
    num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128, expert_ffn_hidden_size=32,
    num_experts=8, num_zero_experts=4, topk=3, routed_scaling_factor=2.0, target_ffn_experts_per_token=2.0,
    q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
    vocab_size=1024, seq_length=256, rope_theta=10000.0,
)  # fmt: skip

SMALL_LLM = LLMConfig(
    num_layers=4, hidden_size=256, num_attention_heads=8, ffn_hidden_size=512, expert_ffn_hidden_size=128,
    num_experts=16, num_zero_experts=8, topk=4, routed_scaling_factor=3.0, target_ffn_experts_per_token=3.0,
    q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
    vocab_size=4096, seq_length=1024, rope_theta=10000.0,
)  # fmt: skip

LONGCAT_LLM = LLMConfig(
    num_layers=28, hidden_size=6144, num_attention_heads=64, ffn_hidden_size=12288, expert_ffn_hidden_size=2048,
    num_experts=512, num_zero_experts=256, topk=12, routed_scaling_factor=6.0, target_ffn_experts_per_token=8.0,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    vocab_size=131072, seq_length=131072, rope_theta=1e7,
)  # fmt: skip

PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        "tiny",
        TINY_LLM,
        ViTConfig(hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2, out_hidden_size=64),
        AudioEncoderConfig(hidden_size=32, ffn_size=64, memory_size=32, num_layers=4, left_context=3,
                           lookahead_layers=2, ctc_vocab_size=TINY_LLM.vocab_size, output_size=64),
        AudioCodecConfig(latent_size=32, channels=64, num_layers=2, decoder_layers=2, codebook_sizes=(64, 32, 32, 32)),
    ),
    "small": ModelPreset(
        "small",
        SMALL_LLM,
        ViTConfig(hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, out_hidden_size=256),
        AudioEncoderConfig(hidden_size=128, ffn_size=256, memory_size=128, num_layers=6, left_context=5,
                           lookahead_layers=2, ctc_vocab_size=SMALL_LLM.vocab_size, output_size=256),
        AudioCodecConfig(latent_size=64, channels=128, num_layers=4, decoder_layers=4,
                         codebook_sizes=(512, 128, 128, 128)),
    ),
    "longcat-flash-omni": ModelPreset(
        "longcat-flash-omni",
        LONGCAT_LLM,
        ViTConfig(),  # REFERENCE section 3: hidden 1280, 32 layers, 16 heads, SwiGLU 3456, patch 14
        AudioEncoderConfig(),  # CTC over its own 8192-entry ASR vocabulary
        AudioCodecConfig(),
    ),
}  # fmt: skip


def get_preset(name: str, **overrides: dict) -> ModelPreset:
    """A preset by name, with `part={"field": value}` overrides applied (validated like the original)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    for part, fields in overrides.items():
        current = getattr(preset, part, None)
        if current is None or not dataclasses.is_dataclass(current):
            raise ValueError(f"preset {name!r} has no part {part!r} to override")
        unknown = set(fields) - {f.name for f in dataclasses.fields(current)}
        if unknown:
            raise ValueError(f"{part} has no field(s) {sorted(unknown)}")
        preset = dataclasses.replace(preset, **{part: dataclasses.replace(current, **fields)})
    return preset
