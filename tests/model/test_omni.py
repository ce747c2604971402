"""The whole tiny omni model on a fixed multimodal batch: tokenizer, 1-second layout, encoders, LLM."""

import torch

from components.ingest.layout import build_chunk_layout
from model import tokenizer as tok
from model.config import get_preset
from model.layout import audio_steps_per_chunk, interleave_chunks
from model.omni import IGNORE, OmniBatch, OmniModel, offset_audio_codes
from model.vit import VisualInput

PRESET = get_preset("tiny")
TEXTS = ["which colour was on screen when the beep sounded", "the red square moves left", "what is three plus four",
         "second0: second1: second2:", "seven", "a blue circle on a gray background"] * 20  # fmt: skip


def test_tokenizer_has_single_id_specials_and_round_trips():
    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    for special in tok.SPECIAL_TOKENS:
        assert len(tokenizer.encode(special).ids) == 1
    text = "the red square moves left, ünïcode too"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert tokenizer.get_vocab_size() <= PRESET.llm.vocab_size


def test_layout_interleaves_seconds_vision_and_audio():
    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    layout = build_chunk_layout(3.0, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75], 48000, 16000)
    seq = interleave_chunks(tokenizer, layout, vision_tokens_per_frame_pair=4, num_audio_steps=37)
    assert seq.num_vision_tokens == 12 and seq.num_audio_tokens == 37
    assert audio_steps_per_chunk(3, 37) == [12, 13, 12]
    text = tokenizer.decode(seq.input_ids, skip_special_tokens=True)
    assert text.index("second0:") < text.index("second1:") < text.index("second2:")
    assert seq.input_ids[0] == tok.special_id(tokenizer, tok.AUDIO_START)
    assert seq.input_ids[-1] == tok.special_id(tokenizer, tok.AUDIO_END)


def test_frame_pairs_that_straddle_a_second_count_once():
    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    times = [(i + 0.5) * 5.6 / 16 for i in range(16)]  # 16 frames over 5.6 s: three in most seconds
    layout = build_chunk_layout(5.6, times, None, 16000)
    seq = interleave_chunks(tokenizer, layout, vision_tokens_per_frame_pair=4, num_audio_steps=0)
    assert seq.num_vision_tokens == 8 * 4  # 8 frame pairs, as the ViT sees them


def test_offset_puts_acoustic_codes_one_step_after_semantic():
    codes = torch.arange(12).view(1, 3, 4)
    shifted = offset_audio_codes(codes)
    assert shifted[0, :, 0].tolist() == [0, 4, 8]
    assert shifted[0, 0, 1:].tolist() == [-1, -1, -1] and shifted[0, 1, 1:].tolist() == [1, 2, 3]


def _batch(tokenizer) -> OmniBatch:
    g = torch.Generator().manual_seed(0)
    video = torch.rand(4, 3, 28, 56, generator=g)  # 2 s at 2 fps, 4 LLM tokens per frame pair
    audio = torch.randn(32000, generator=g) * 0.1  # 2 s -> 25 encoder steps
    layout = build_chunk_layout(2.0, [0.25, 0.75, 1.25, 1.75], 32000, 16000)
    seq = interleave_chunks(tokenizer, layout, vision_tokens_per_frame_pair=4, num_audio_steps=25)
    question = tokenizer.encode("which colour was on screen when the beep sounded").ids
    answer = tokenizer.encode(" red").ids + [tok.special_id(tokenizer, tok.EOS)]
    speech = [tok.special_id(tokenizer, tok.SPEECH_OUT)] * 6
    ids = seq.input_ids + question + answer + speech
    labels = [IGNORE] * len(ids)
    start = len(seq.input_ids) + len(question) - 1
    for i, token in enumerate(answer):
        labels[start + i] = token  # predict the answer tokens
    codes = torch.full((1, len(ids), 4), -1)
    codes[0, -6:] = torch.randint(0, 32, (6, 4), generator=g)
    codes = offset_audio_codes(codes)
    audio_labels = torch.full_like(codes, IGNORE)
    audio_labels[0, -7:-1] = torch.where(codes[0, -6:] >= 0, codes[0, -6:], IGNORE)
    from model.audio_encoder import StreamingAudioEncoder

    feats = StreamingAudioEncoder(PRESET.audio_encoder).features(audio)
    return OmniBatch(torch.tensor([ids]), torch.tensor([labels]), codes, audio_labels, [VisualInput(video)], [feats])


def test_tiny_omni_model_learns_a_fixed_multimodal_batch(single_process):
    torch.manual_seed(0)
    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    model = OmniModel(PRESET, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    batch = _batch(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        losses = model(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert set(history[0]) == {"text", "audio_semantic", "audio_acoustic"}
    for key in history[0]:
        assert history[-1][key] < 0.5 * history[0][key], (key, history[0][key], history[-1][key])
    assert model.vit.patch_embed.weight.grad.abs().sum() > 0  # vision features reach the loss
    assert model.audio_encoder.input.weight.grad.abs().sum() > 0  # and so do audio features


def test_placeholder_count_mismatch_is_a_clear_error(single_process):
    import pytest

    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    model = OmniModel(PRESET, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    batch = _batch(tokenizer)
    batch.visuals = None
    with pytest.raises(ValueError, match="vision placeholders but 0 vision feature vectors"):
        model(batch)


def test_packed_samples_do_not_attend_to_each_other(single_process):
    """With document ids, a sample's logits in a packed sequence equal its logits alone."""
    from model.omni import document_mask

    torch.manual_seed(0)
    model = OmniModel(get_preset("tiny"), vision_pad_id=5, audio_pad_id=6).eval()
    first, second = torch.randint(10, 200, (1, 7)), torch.randint(10, 200, (1, 9))
    packed = torch.cat([first, second], dim=1)
    documents = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        together = model.text_logits(OmniBatch(packed, torch.full_like(packed, -100), document_ids=documents))
        alone = model.text_logits(OmniBatch(second, torch.full_like(second, -100)))
        leaky = model.text_logits(OmniBatch(packed, torch.full_like(packed, -100)))
    assert torch.allclose(together[:, 7:], alone, atol=1e-5)
    assert not torch.allclose(leaky[:, 7:], alone, atol=1e-3)  # without the mask the first sample leaks in
    assert document_mask(documents)[0, 0, 7, 6] and not document_mask(documents)[0, 0, 8, 7]


def test_ctc_posterior_audio_input_is_the_token_embeddings_the_ctc_head_hears(single_process):
    """audio_input='ctc_posteriors': each audio position's input is the CTC head's compressed posterior (its
    best path's runs, blank dropped) times the LLM's embedding table. The text loss then trains the encoder
    through its CTC head and the embedding table, and not the projector; the projector path (default) is
    what it was."""
    import dataclasses

    import pytest

    from model.audio_encoder import CTC_BLANK

    torch.manual_seed(0)
    tokenizer = tok.train_tokenizer(TEXTS, vocab_size=400)
    args = (PRESET, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    model = OmniModel(*args, audio_input="ctc_posteriors")
    batch = _batch(tokenizer)
    clip = batch.audio_features[0]
    encoder = model.audio_encoder
    posteriors = torch.softmax(encoder.ctc_logits(encoder(clip[None]))[0], -1)
    assert posteriors[:, CTC_BLANK].min() > 0  # so dropping it is a change this test sees
    compressed = encoder.ctc_posteriors(encoder(clip[None]))[0]  # its runs: tests/model/test_audio_encoder.py
    recognised = compressed[:, CTC_BLANK] < 1  # the other steps are the blank alone (its <|pad|> row)
    assert recognised.any() and compressed[recognised, CTC_BLANK].abs().sum() == 0
    expected = compressed @ model.llm.embedding.word_embeddings.weight
    torch.testing.assert_close(model._audio_features(batch), expected, rtol=1e-5, atol=1e-6)

    model(batch)["text"].backward()
    assert encoder.ctc_head.weight.grad.abs().sum() > 0 and encoder.input.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.projector.parameters())
    audio_rows = torch.zeros(PRESET.llm.vocab_size, dtype=torch.bool)
    audio_rows[sorted(set(range(PRESET.llm.vocab_size)) - set(batch.input_ids[0].tolist()))] = True
    # rows of tokens the batch never spells get gradient only through the posteriors
    assert model.llm.embedding.word_embeddings.weight.grad[audio_rows].abs().sum() > 0

    projector = OmniModel(*args)
    projector.load_state_dict(model.state_dict())
    torch.testing.assert_close(projector._audio_features(batch), encoder.to_llm(encoder(clip[None]))[0])
    with pytest.raises(ValueError, match="audio_input 'nope' is not one of"):
        OmniModel(*args, audio_input="nope")
    small_ctc = dataclasses.replace(PRESET, audio_encoder=dataclasses.replace(PRESET.audio_encoder, ctc_vocab_size=512))
    with pytest.raises(ValueError, match=r"ctc_vocab_size \(512\) must equal llm.vocab_size \(1024\)"):
        OmniModel(small_ctc, *args[1:], audio_input="ctc_posteriors")
