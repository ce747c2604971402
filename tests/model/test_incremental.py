"""The KV-cached incremental forward gives what one forward over the whole sequence gives: the logits after
every prefilled piece (text, a video's frame pairs, audio encoded with its context), the greedy text and
the greedy speech codes."""

import pytest
import torch

from model import tokenizer as tok
from model.config import get_preset
from model.incremental import ContextFull, IncrementalOmni
from model.omni import IGNORE, OmniBatch, OmniModel
from model.speech_decoding import greedy_speech_codes
from model.vit import VisualInput

PRESET = get_preset("tiny")


@pytest.fixture(scope="module")
def omni(single_process):
    torch.manual_seed(0)
    tokenizer = tok.train_tokenizer(["second0: second1: say: the red square moves left"] * 20, vocab_size=300)
    models = {}
    for audio_input in ("projector", "ctc_posteriors"):
        preset = PRESET
        if audio_input == "ctc_posteriors":  # CTC vocabulary = the LLM's, as the tiny curriculum sets it
            from dataclasses import replace

            preset = replace(PRESET, audio_encoder=replace(PRESET.audio_encoder, ctc_vocab_size=PRESET.llm.vocab_size))
        torch.manual_seed(0)
        models[audio_input] = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD),
                                        tok.special_id(tokenizer, tok.AUDIO_PAD), audio_input=audio_input).eval()
    return tokenizer, models


def _stream(tokenizer, model):
    """Two seconds of a clip: ids with one frame pair and 12 + 13 audio steps per second, the media."""
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(4, 3, 28, 56, generator=g)
    per_pair = (28 // 14) * (56 // 14) // 2
    audio = torch.randn(25, 640, generator=g)
    v, a = tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD)
    pieces = [tokenizer.encode("second0:").ids + [v] * per_pair + [a] * 12,
              tokenizer.encode("second1:").ids + [v] * per_pair + [a] * 13,
              tokenizer.encode(" say: the red").ids]  # fmt: skip
    return pieces, frames, audio


@pytest.mark.parametrize("audio_input", ["projector", "ctc_posteriors"])
def test_prefill_piece_by_piece_equals_one_forward(omni, audio_input):
    tokenizer, models = omni
    model = models[audio_input]
    pieces, frames, audio = _stream(tokenizer, model)
    ids = sum(pieces, [])
    full = model.text_logits(OmniBatch(torch.tensor([ids]), torch.full((1, len(ids)), IGNORE),
                                       visuals=[VisualInput(frames)], audio_features=[audio]))[0]  # fmt: skip
    encoded = model.encode_audio([audio])[0]  # the whole clip, as training encodes it
    state = IncrementalOmni(model, max_tokens=128)
    seconds = [(VisualInput(frames[:2]), encoded[:12]), (VisualInput(frames[2:]), encoded[12:]), (None, None)]
    end = 0
    for piece, (visual, features) in zip(pieces, seconds):
        step = state.extend(piece, visuals=[visual] if visual else None, audio=features)
        end += len(piece)
        torch.testing.assert_close(step.text_logits, full[end - 1].float(), atol=1e-4, rtol=1e-4)
    assert state.length == len(ids) == len(state.ids)


def test_greedy_text_and_speech_equal_the_uncached_decoders(omni):
    tokenizer, models = omni
    model = models["projector"]
    prompt = tokenizer.encode(" say: the red square").ids + [tok.special_id(tokenizer, tok.ASSISTANT)]
    eos = tok.special_id(tokenizer, tok.EOS)
    state = IncrementalOmni(model, max_tokens=128)
    said = state.greedy_text(state.extend(prompt), eos, max_new=6)
    ids = list(prompt)
    for _ in range(6):  # the uncached loop evaluation runs (components.evaluation.scoring._greedy)
        nxt = int(model.text_logits(OmniBatch(torch.tensor([ids]), torch.full((1, len(ids)), IGNORE)))[0, -1].argmax())
        if nxt == eos:
            break
        ids.append(nxt)
    assert said == ids[len(prompt) :] and said

    speech = tok.special_id(tokenizer, tok.SPEECH_OUT)
    state = IncrementalOmni(model, max_tokens=128)
    frames = torch.stack(list(state.greedy_speech(state.extend(prompt), speech, num_frames=6)))
    assert torch.equal(frames, greedy_speech_codes(model, prompt, speech, num_frames=6))


def test_a_sequence_longer_than_the_cache_is_refused(omni):
    tokenizer, models = omni
    state = IncrementalOmni(models["projector"], max_tokens=8)
    state.extend(list(range(5)))
    with pytest.raises(ContextFull, match="exceed this session's 8-token context"):
        state.extend(list(range(4)))
