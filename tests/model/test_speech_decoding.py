"""Greedy speech output reproduces the codes a model was trained to say, and the codec makes them audio."""

import torch

from components.training.speech_render import render_speech_response
from components.training.stage_runner import make_microbatch
from model import tokenizer as tok
from model.config import get_preset
from model.omni import OmniModel
from model.speech_decoding import greedy_speech_codes, speak

PRESET = get_preset("tiny")


def test_greedy_decoder_says_what_it_learned(single_process):
    torch.manual_seed(0)
    tokenizer = tok.train_tokenizer(["say: the red square moves left"] * 20, vocab_size=300)
    model = OmniModel(PRESET, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    g = torch.Generator().manual_seed(3)
    codes = torch.stack([torch.randint(0, n, (8,), generator=g) for n in PRESET.codec.codebook_sizes], -1)
    sample = render_speech_response("k", "the red square", codes, tokenizer)
    batch = make_microbatch([[sample]])
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("codec.")], lr=5e-3)
    for _ in range(40):
        losses = model(batch)
        loss = losses["audio_semantic"] + losses["audio_acoustic"] + losses["first_audio_token"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    prompt = sample.input_ids[: sample.first_audio + 1]
    said = greedy_speech_codes(model, prompt, tok.special_id(tokenizer, tok.SPEECH_OUT), num_frames=8)
    assert said.shape == (8, 4)
    assert (said == codes).float().mean() > 0.9, (said, codes)
    audio = speak(model, prompt, tok.special_id(tokenizer, tok.SPEECH_OUT), num_frames=8)
    assert abs(audio.shape[0] - 8 * PRESET.codec.hop) <= PRESET.codec.hop and audio.abs().max() > 0
