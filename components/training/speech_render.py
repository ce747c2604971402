"""Speech-response samples: the model answers in speech (REFERENCE.md section 4, output side).

A speech response is built from a clip of the assistant's own voice (the demo corpus's `assistant_speech`
family: the model speaks in one voice, components/demo_data/families.py ASSISTANT_VOICE):
`<|user|> say: TRANSCRIPT<|assistant|>`, then one
`<|speech|>` position per codec frame plus one. Those positions carry the clip's codec codes offset as
the model emits them (`model.omni.offset_audio_codes`: semantic code of frame t with the acoustic codes
of frame t-1), and each position's audio targets are the next position's codes, so the assistant
position predicts the first semantic token (`first_audio`, the first_audio_token loss) and the last
speech position carries only the last frame's acoustic codes. There are no text targets.

    sample = render_speech_response(key, transcript, codes, tokenizer)   # codes [frames, 4]
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer

from components.training.render import RenderedSample
from model import tokenizer as tok
from model.omni import IGNORE, offset_audio_codes

SPEECH_RESPONSE = "speech_response"  # the task family (mixture key) of these samples
SPEECH_SOURCE = "assistant_speech"  # the task family of the clips they are made of: the assistant's voice


def speech_prompt_ids(tokenizer: Tokenizer, transcript: str) -> list[int]:
    """The instruction that asks for `transcript` in speech, up to and including `<|assistant|>`."""
    return ([tok.special_id(tokenizer, tok.USER)] + tokenizer.encode(" say: " + transcript).ids
            + [tok.special_id(tokenizer, tok.ASSISTANT)])  # fmt: skip


def speech_positions(codes: torch.Tensor) -> torch.Tensor:
    """[frames, books] codes -> [frames + 1, books] input codes of the speech positions (offset, -1 = none)."""
    padded = torch.cat([codes.long(), torch.full((1, codes.shape[1]), -1, dtype=torch.long)])
    return offset_audio_codes(padded[None])[0]


def render_speech_response(key: str, transcript: str, codes: torch.Tensor, tokenizer: Tokenizer) -> RenderedSample:
    prompt = speech_prompt_ids(tokenizer, transcript)
    placed = speech_positions(codes)
    n = len(prompt) + placed.shape[0]
    ids = prompt + [tok.special_id(tokenizer, tok.SPEECH_OUT)] * placed.shape[0]
    audio_codes = torch.full((n, codes.shape[1]), -1, dtype=torch.long)
    audio_codes[len(prompt) :] = placed
    audio_labels = torch.full_like(audio_codes, IGNORE)
    # position p predicts the codes at p + 1: from the assistant token to the second-to-last speech position
    audio_labels[len(prompt) - 1 : n - 1] = torch.where(placed >= 0, placed, IGNORE)
    return RenderedSample(f"{key}#speech", SPEECH_RESPONSE, ids, [IGNORE] * n, audio_codes=audio_codes,
                          audio_labels=audio_labels, first_audio=len(prompt) - 1)  # fmt: skip
