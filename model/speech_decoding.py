"""Greedy speech output: the omni model's 4 audio heads -> codec codes -> waveform (REFERENCE.md section 4).

The prompt ends where speech starts (e.g. `<|assistant|>`); every generated position is a `<|speech|>`
token whose input codes are the semantic code just predicted plus the acoustic codes predicted one step
later, the offset layout the model trains on (model.omni.offset_audio_codes,
components.training.speech_render). Position k predicts the semantic code of frame k and the acoustic
codes of frame k-1, so `num_frames` frames take `num_frames + 1` forward passes. No KV cache: each step
re-runs the whole sequence, which is fine for the tiny evaluation model and not a serving path.

    codes = greedy_speech_codes(model, prompt_ids, speech_id, num_frames=40)   # [40, 4]
    audio = model.codec.decode(codes)                                          # 16 kHz waveform
"""

from __future__ import annotations

import torch

from model.omni import IGNORE, OmniBatch, OmniModel


@torch.no_grad()
def greedy_speech_codes(model: OmniModel, prompt_ids: list[int], speech_id: int, num_frames: int) -> torch.Tensor:
    """[num_frames, books] codes, semantic then acoustic (offset one step), argmax at every step."""
    books = len(model.audio_heads)
    ids = list(prompt_ids)
    codes = torch.full((len(ids), books), -1, dtype=torch.long)
    out = torch.full((num_frames, books), -1, dtype=torch.long)
    for step in range(num_frames + 1):
        batch = OmniBatch(torch.tensor([ids]), torch.full((1, len(ids)), IGNORE), audio_codes=codes[None])
        logits = [head_logits[0, -1] for head_logits in model.audio_logits(batch)]
        semantic = int(logits[0].argmax()) if step < num_frames else -1
        acoustic = [int(x.argmax()) for x in logits[1:]] if step > 0 else [-1] * (books - 1)
        if step < num_frames:
            out[step, 0] = semantic
        if step > 0:
            out[step - 1, 1:] = torch.tensor(acoustic)
        if step < num_frames:  # the next input position carries what was just predicted
            ids.append(speech_id)
            codes = torch.cat([codes, torch.tensor([[semantic, *acoustic]])])
    return out


def speak(model: OmniModel, prompt_ids: list[int], speech_id: int, num_frames: int) -> torch.Tensor:
    """The greedy spoken answer as a waveform at the codec's sample rate."""
    with torch.no_grad():
        return model.codec.decode(greedy_speech_codes(model, prompt_ids, speech_id, num_frames))
