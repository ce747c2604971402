"""The registry of losses a curriculum stage may weight, and which modules each task family passes through.

One table that the curriculum validator (components.specs.curriculum) and the trainer
(components.training.megatron_step) both read, so a weight the trainer cannot produce is refused when the
spec loads instead of being silently dropped during training:

    IMPLEMENTED_LOSSES["ctc"].families   # ('asr', 'voice_qa', 'av_qa'): the samples that carry its targets

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
    parts: tuple[str, ...] = ()
    """The mean losses (model.omni.mean_losses) the weight multiplies in the omni trainer's objective;
    empty: trained by a loop of its own (the codec stage, components.training.codec_stage)."""


# Task families by what their samples condition on: the demo corpus's, then the full-size recipe's
# (data_specs/curriculum/longcat_omni.yaml). A new family goes into the tuple that describes its samples.
SPEECH = ("asr", "voice_qa", "speech_text", "spoken_instructions", "audio_sft")
PICTURES = ("image_caption", "video_qa", "av_qa", "interleaved_image_text", "ocr_grounding_gui", "long_multimodal",
            "image_sft", "video_sft", "omni_sft")  # fmt: skip
STILL_IMAGES = ("image_caption", "interleaved_image_text", "ocr_grounding_gui", "image_sft")  # never carry sound
SPEECH_RESPONSE = "speech_response"  # components.training.speech_render
SPEAKS = (SPEECH_RESPONSE, "speech_text", "audio_sft", "omni_sft")  # samples with speech to predict
PSEUDO_ASR = "pseudo_asr"  # components.training.pseudo_speech: recognised tokens from text, no audio
PSEUDO_AV = "pseudo_av"  # the same, re-timed in av_qa clips' frames: a picture, no audio

# The loss partition of model.omni: each text target belongs to one class by what its sample conditions on.
IMPLEMENTED_LOSSES: dict[str, LossSource] = {
    "text": LossSource(("text",), "text-only samples", parts=("text",)),
    "audio_text": LossSource(SPEECH + (PSEUDO_ASR,), "text targets conditioned on speech", parts=("audio_text",)),
    "vision": LossSource(PICTURES + (PSEUDO_AV,), "text targets conditioned on an image or video", parts=("vision",)),
    "audio": LossSource(SPEAKS, "speech responses (codec tokens to predict)",
                        parts=("audio_semantic", "audio_acoustic")),
    "first_audio_token": LossSource(SPEAKS, "speech responses (their first semantic token)",
                                    parts=("first_audio_token",)),
    "ctc": LossSource(("asr", "voice_qa", "av_qa"), "speech with what it says (av_qa: its words and beeps)",
                      runs_llm=False, modules=("audio_encoder",), parts=("ctc",)),
    "codec": LossSource(("asr", "voice_qa"), "speech waveforms", runs_llm=False, modules=("codec",)),
}

# The modules a task family's samples pass through on their way into the LLM (components.training.render):
# pictures through the ViT and its projector; speech through the audio encoder and its projector, or, in a
# stage with `speech_input: codec` (REFERENCE stages 1-4), through the trained codec and the audio-code
# embeddings. A family not listed feeds text only. The validator refuses a stage that feeds data through a
# module no stage of its init_from chain (itself included) has trained.
AUDIO_PATH = ("audio_encoder", "audio_encoder_projector")
CTC_POSTERIOR_PATH = ("audio_encoder",)  # its CTC head's posteriors mix the LLM's embeddings: no projector
CODEC_PATH = ("codec", "audio_embeddings")
VISION_PATH = ("vit", "vit_projector")


def family_modules(family: str, speech_input: str = "encoder") -> tuple[str, ...]:
    speech = {"codec": CODEC_PATH, "ctc_posteriors": CTC_POSTERIOR_PATH}.get(speech_input, AUDIO_PATH)
    modules: tuple[str, ...] = ()
    if family in SPEECH:
        modules += speech
    if family == PSEUDO_AV:
        modules += VISION_PATH
    if family in PICTURES:
        modules += VISION_PATH + (() if family in STILL_IMAGES else speech)  # clips may carry a soundtrack
    if family in SPEAKS:  # speech to predict: its codes go in through the embeddings and out through the heads
        modules += ("audio_embeddings", "audio_heads") + (("codec",) if family == SPEECH_RESPONSE else ())
    return tuple(dict.fromkeys(modules))


# Modules whose weights come from outside the omni model's stages (none today: the codec has its own stage).
PRETRAINED_ELSEWHERE: tuple[str, ...] = ()


def runs_llm(weights: dict[str, float]) -> bool:
    """Whether a stage with these loss weights needs the LLM's forward pass."""
    return any(name not in IMPLEMENTED_LOSSES or IMPLEMENTED_LOSSES[name].runs_llm
               for name, weight in weights.items() if weight)  # fmt: skip
