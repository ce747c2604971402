"""Incremental (KV-cached) forward of the omni model: a sequence prefilled piece by piece, then decoded.

Megatron-core's static inference context keeps each attention layer's keys and values (the ScMoE layer
hands it to both of its attention sub-layers); each `extend` embeds only the new positions and attends to
everything before them, so a live stream costs one pass over each second as it arrives instead of a pass
over the whole history per second. A piece longer than one token needs an explicit mask (the new rows of
the causal mask): megatron's default causal mask is square. The logits of every position equal those of
one forward over the whole sequence (tests/model/test_incremental.py).

    state = IncrementalOmni(model, max_tokens=4096)
    state.extend(ids, visuals=[...])                # prefill: media features replace placeholders
    state.extend(ids2, audio=features)              # audio already encoded with its context
    text_ids = state.greedy_text(eos_id, max_new=32)
    for frame_codes in state.greedy_speech(speech_id, num_frames=40): ...

One sequence (batch 1) per state: a server keeps one state per session. One pipeline stage, no tensor or
context parallelism (what evaluation loads); a full-size model served across GPUs needs the parallel
inference engine, which is not built here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from model.omni import IGNORE, OmniBatch, OmniModel
from model.vit import VisualInput


@dataclass
class Step:
    text_logits: torch.Tensor  # [vocab] next-token logits after the last position
    hidden: torch.Tensor  # [hidden] the last position's final hidden state (what the audio heads read)


class ContextFull(ValueError):
    """The sequence would outgrow the cache the state was made with."""


class IncrementalOmni:
    def __init__(self, model: OmniModel, max_tokens: int):
        from megatron.core.inference.contexts import StaticInferenceContext

        if model.cp > 1 or not (model.first_stage and model.last_stage):
            raise ValueError("incremental decoding runs the whole model in one process: load it at pipeline and "
                             "context size 1")  # fmt: skip
        self.model, self.max_tokens = model, max_tokens
        self.context = StaticInferenceContext(max_batch_size=1, max_sequence_length=max_tokens)
        self.ids: list[int] = []

    @property
    def length(self) -> int:
        return self.context.sequence_len_offset

    @torch.no_grad()
    def extend(self, ids: list[int], visuals: list[VisualInput] | None = None, audio: torch.Tensor | None = None,
               audio_codes: torch.Tensor | None = None) -> Step:  # fmt: skip
        """Append `ids` (placeholders filled by `visuals` and by `audio`, LLM-width features from
        `OmniModel.encode_audio`; `audio_codes` [len(ids), books] codec codes, -1 = none) and return what
        follows the last one."""
        if not ids:
            raise ValueError("extend needs at least one token")
        start, n = self.length, len(ids)
        if start + n > self.max_tokens:
            raise ContextFull(f"{start + n} tokens would exceed this session's {self.max_tokens}-token context")
        model = self.model
        batch = OmniBatch(torch.tensor([ids]), torch.full((1, n), IGNORE), visuals=visuals or None,
                          audio_codes=None if audio_codes is None else audio_codes[None])  # fmt: skip
        batch = batch.to(model._device())
        embedded = model.embed(batch, audio=None if audio is None else audio.to(model._device()))
        keys = torch.arange(start + n, device=embedded.device)
        mask = (keys[None, :] > keys[start:, None])[None, None]  # True = hidden: later positions
        logits = model.llm(input_ids=None, position_ids=None, attention_mask=mask, decoder_input=embedded,
                           inference_context=self.context, runtime_gather_output=True)  # fmt: skip
        hidden, model._hidden = model._hidden, None  # [n, 1, H], kept by the decoder hook
        self.context.sequence_len_offset += n
        self.ids += ids
        return Step(logits[0, -1].float(), hidden[-1, 0])

    def greedy_text(self, last: Step, eos_id: int, max_new: int) -> list[int]:
        """Argmax tokens after `last` until `eos_id` (not returned) or `max_new` tokens; each is appended."""
        out: list[int] = []
        step = last
        for _ in range(max_new):
            token = int(step.text_logits.argmax())
            if token == eos_id:
                break
            out.append(token)
            step = self.extend([token])
        return out

    @torch.no_grad()
    def greedy_speech(self, last: Step, speech_id: int, num_frames: int) -> Iterator[torch.Tensor]:
        """Codec frames [books] one at a time, as model.speech_decoding.greedy_speech_codes makes them (the
        same offset layout: position k predicts frame k's semantic code and frame k-1's acoustic codes),
        with the cache: each yields as soon as its acoustic codes exist, one position later."""
        heads = self.model.audio_heads
        step, pending = last, None  # pending: the frame whose acoustic codes the next position predicts
        for k in range(num_frames + 1):
            logits = [head(step.hidden[None, None])[0][0, 0] for head in heads]
            semantic = int(logits[0].argmax()) if k < num_frames else -1
            acoustic = [int(x.argmax()) for x in logits[1:]] if k > 0 else [-1] * (len(heads) - 1)
            if pending is not None:
                yield torch.tensor([pending, *acoustic])
            if k == num_frames:
                return
            pending = semantic
            step = self.extend([speech_id], audio_codes=torch.tensor([[semantic, *acoustic]]))
