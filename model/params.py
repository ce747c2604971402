"""Parameter accounting from the modules the code builds, on the meta device (no memory).

Counts come from `named_parameters()` of the real modules, not from a formula, so they check the
implementation against the paper's numbers (REFERENCE.md section 2: total 560.66B; activated
18.69B + k * 1.057B for k FFN experts per token, input embedding excluded).
"""

from __future__ import annotations

import torch

from model.config import ModelPreset
from model.distributed import init_parallel


def _count(module: torch.nn.Module, predicate=lambda name: True) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if predicate(name))


def count_llm(preset: ModelPreset, ks: tuple[int, ...] = (0, 8, 12)) -> dict[str, int]:
    from model.llm.model import build_llm

    init_parallel()
    with torch.device("meta"):
        # No weight init: on meta it draws nothing, yet megatron still runs it for each of the ~29k expert
        # projections through the CPU device mode (about two thirds of the build time). Shapes are unchanged.
        # SequentialMLP experts even on GPUs: Transformer Engine's grouped linears place their weights on
        # an explicit device (real memory, ~80 GB at full size), and the per-expert shapes are the same.
        llm = build_llm(preset.llm, perform_initialization=False, moe_grouped_gemm=False)
    total = _count(llm)
    experts = _count(llm, lambda n: ".moe.experts." in n)
    embedding = _count(llm, lambda n: n.startswith("embedding."))
    per_expert = experts // preset.llm.num_experts  # summed over layers: one expert slot in every layer
    counts = {"llm_total": total, "llm_expert_params_per_slot": per_expert}
    for k in ks:
        counts[f"llm_activated_k{k}"] = total - experts - embedding + k * per_expert
    return counts


def count_side_modules(preset: ModelPreset) -> dict[str, int]:
    from model.audio_encoder import StreamingAudioEncoder
    from model.codec import AudioCodec
    from model.vit import LongCatViT

    with torch.device("meta"):
        vit, audio, codec = (
            LongCatViT(preset.vit),
            StreamingAudioEncoder(preset.audio_encoder),
            AudioCodec(preset.codec),
        )
    return {
        "vit_total": _count(vit, lambda n: not n.startswith("projector.")),
        "vit_projector": _count(vit.projector),
        "audio_encoder_total": _count(audio, lambda n: not n.startswith(("projector.", "ctc_head."))),
        "audio_encoder_projector": _count(audio.projector),
        "audio_encoder_ctc_head": _count(audio.ctc_head),
        "codec_total": _count(codec),
        "codec_decoder": _count(codec, lambda n: n.startswith("decoder")),
    }


def count_parameters(preset: ModelPreset) -> dict[str, int]:
    """All counts of `omnistage model params`: the LLM (total, activated per k) and each side module."""
    return count_llm(preset) | count_side_modules(preset)
