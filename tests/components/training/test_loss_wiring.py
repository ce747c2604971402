"""Every loss a stage may weight reaches exactly the modules it should (model.omni's loss table).

One packed row holds a text-only sample, a speech-input question (codec tokens), an image caption and
a speech response; a weight of 1 on one loss must give gradient to its modules and none to the others.
"""

import pytest
import torch

from components.training.megatron_step import WEIGHTED_LOSSES, check_loss_weights, weighted_loss
from components.training.render import RenderedSample
from components.training.speech_render import render_speech_response
from components.training.stage_runner import make_microbatch, module_groups
from model import tokenizer as tok
from model.config import get_preset
from model.omni import IGNORE, OmniModel
from model.vit import VisualInput

PRESET = get_preset("tiny")
TEXTS = ["say: the red square moves left", "what colour is the circle", "a blue circle on gray", "seven"] * 20

# loss weight -> the module groups (stage_runner.module_groups) that must get gradient; all others none
EXPECTED = {
    "text": {"llm"},
    "audio_text": {"llm", "audio_embeddings"},
    "vision": {"llm", "vit", "vit_projector"},
    "audio": {"llm", "audio_embeddings", "audio_heads"},
    "first_audio_token": {"llm", "audio_heads"},  # the assistant position: no codes in its context
}


def _answer(tokenizer, text: str, prompt: list[int]) -> tuple[list[int], list[int]]:
    answer = tokenizer.encode(" " + text).ids + [tok.special_id(tokenizer, tok.EOS)]
    ids = prompt + answer
    labels = [IGNORE] * (len(prompt) - 1) + answer + [IGNORE]
    return ids, labels


@pytest.fixture(scope="module")
def wiring(single_process):
    torch.manual_seed(0)
    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    sid = lambda name: tok.special_id(tokenizer, name)  # noqa: E731
    model = OmniModel(PRESET, sid(tok.VISION_PAD), sid(tok.AUDIO_PAD))
    g = torch.Generator().manual_seed(1)
    text_ids = [sid(tok.BOS)] + tokenizer.encode("the red square moves left").ids + [sid(tok.EOS)]
    text = RenderedSample("t", "text", text_ids, text_ids[1:] + [IGNORE])
    heard = [sid(tok.AUDIO_START)] + [sid(tok.SPEECH_OUT)] * 6 + [sid(tok.AUDIO_END)]
    ids, labels = _answer(tokenizer, "seven", heard)
    codes = torch.full((len(ids), 4), -1)
    codes[1:7] = torch.stack([torch.randint(0, n, (6,), generator=g) for n in PRESET.codec.codebook_sizes], -1)
    voice = RenderedSample("v", "voice_qa", ids, labels, text_loss="audio_text", audio_codes=codes)
    image = VisualInput(torch.rand(3, 28, 56, generator=g))
    num_vision = model.vit([image])[0].shape[0]
    shown = [sid(tok.VISION_START)] + [sid(tok.VISION_PAD)] * num_vision + [sid(tok.VISION_END)]
    ids, labels = _answer(tokenizer, "a blue circle", shown)
    caption = RenderedSample("c", "image_caption", ids, labels, [image], text_loss="vision")
    spoken = torch.stack([torch.randint(0, n, (5,), generator=g) for n in PRESET.codec.codebook_sizes], -1)
    speech = render_speech_response("a", "the red square", spoken, tokenizer)
    return model, make_microbatch([[text, voice, caption, speech]])


def _grads_by_group(model: OmniModel, batch, weights: dict[str, float]) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    weighted_loss(model(batch), weights).backward()
    return {name: sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
            for name, params in module_groups(model).items()}  # fmt: skip


@pytest.mark.parametrize("loss", sorted(EXPECTED))
def test_each_loss_trains_its_modules_and_only_those(wiring, loss):
    model, batch = wiring
    # a new loss needs a row here; ctc (the audio encoder alone) is wired in tests/model/test_audio_encoder_ctc.py
    assert set(EXPECTED) | {"ctc"} == set(WEIGHTED_LOSSES)
    grads = _grads_by_group(model, batch, {loss: 1.0})
    assert {name for name, g in grads.items() if g > 0} == EXPECTED[loss], grads
    heads = [float(h.weight.grad.abs().sum()) if h.weight.grad is not None else 0.0 for h in model.audio_heads]
    text_head = model.llm.output_layer.weight.grad
    text_head = 0.0 if text_head is None else float(text_head.abs().sum())
    if loss == "first_audio_token":
        assert heads[0] > 0 and heads[1:] == [0.0, 0.0, 0.0]  # only the semantic head
    if loss in ("audio", "first_audio_token"):
        assert text_head == 0.0
    else:
        assert text_head > 0


def test_weights_scale_their_loss_and_unnamed_losses_weigh_nothing(wiring):
    model, batch = wiring
    losses = model(batch)
    assert {"text", "audio_text", "vision", "audio_semantic", "audio_acoustic", "first_audio_token"} <= set(losses)
    both = weighted_loss(losses, {"text": 1.75, "audio": 0.25})
    expected = 1.75 * losses["text"] + 0.25 * (losses["audio_semantic"] + losses["audio_acoustic"])
    assert torch.allclose(both, expected)
    assert float(weighted_loss(losses, {"vision": 0.0})) == 0.0


def test_unimplemented_loss_weight_is_refused_by_name():
    # the codec trains in its own loop (components.training.codec_stage), never in the omni trainer's objective
    with pytest.raises(ValueError, match=r"stage 's1': loss_weights \['codec'\] are not implemented"):
        check_loss_weights("s1", {"text": 1.0, "codec": 0.5})
    with pytest.raises(ValueError, match="loss weight 'codec' is not implemented"):
        weighted_loss({"text": torch.tensor(1.0)}, {"codec": 1.0})
