"""The registry of losses a curriculum stage may weight, and which modules each task family passes through.

One table that the curriculum validator (components.specs.curriculum) and the trainer
(components.training.megatron_step) both read, so a weight the trainer cannot produce is refused when the
spec loads instead of being silently dropped during training:

    IMPLEMENTED_LOSSES["ctc"].families   # ('asr', 'voice_qa'): the samples that carry its targets

Adding a loss = implementing it in model.omni (a sum in `loss_terms`, its count in `loss_counts`) and in
`weighted_loss`, then adding one entry here. Plain data, no torch import: the spec loader imports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossSource:
    """Where a loss's targets come from."""

    families: tuple[str, ...] | None
    """Task families whose rendered samples carry this loss's targets; None: every family."""
    needs: str
    """What a sample must hold to produce it (said in refusals)."""
    runs_llm: bool = True
    """False: computed from an encoder alone, so a stage weighting only such losses skips the LLM forward."""
    modules: tuple[str, ...] = ()
    """Curriculum modules its computation runs besides the data's path into the LLM (FAMILY_MODULES)."""


IMPLEMENTED_LOSSES: dict[str, LossSource] = {
    "text": LossSource(None, "text targets (every family renders some)"),
    "ctc": LossSource(("asr", "voice_qa"), "speech with its transcript", runs_llm=False, modules=("audio_encoder",)),
}

# The modules a task family's samples pass through on their way into the LLM (components.training.render):
# today speech goes through the audio encoder and its projector in every stage, pictures through the ViT
# and its projector. A family not listed feeds text only. The validator refuses a stage that feeds data
# through a module no stage of its init_from chain (itself included) has trained.
AUDIO_PATH = ("audio_encoder", "audio_encoder_projector")
VISION_PATH = ("vit", "vit_projector")
FAMILY_MODULES: dict[str, tuple[str, ...]] = {
    "asr": AUDIO_PATH,
    "voice_qa": AUDIO_PATH,
    "image_caption": VISION_PATH,
    "video_qa": VISION_PATH + AUDIO_PATH,  # clips may carry a soundtrack
    "av_qa": VISION_PATH + AUDIO_PATH,
}

# Modules whose weights come from outside the omni model's stages (the codec has its own training).
PRETRAINED_ELSEWHERE = ("codec",)


def runs_llm(weights: dict[str, float]) -> bool:
    """Whether a stage with these loss weights needs the LLM's forward pass."""
    return any(name not in IMPLEMENTED_LOSSES or IMPLEMENTED_LOSSES[name].runs_llm
               for name, weight in weights.items() if weight)  # fmt: skip
