import torch

from model.audio_encoder import AudioEncoderConfig, StreamingAudioEncoder, fbank

TINY = AudioEncoderConfig(hidden_size=32, ffn_size=64, memory_size=32, num_layers=4, left_context=3,
                          lookahead_layers=2, ctc_vocab_size=20, output_size=48)  # fmt: skip


def test_features_are_80_dim_fbank_spliced_to_80_ms():
    wave = torch.randn(16000) * 0.1  # 1 s
    assert fbank(wave, TINY).shape[1] == 80
    enc = StreamingAudioEncoder(TINY)
    feats = enc.features(wave)
    assert feats.shape == (12, 640)  # 100 frames of 10 ms -> 12 steps of 80 ms (12.5 Hz)
    assert enc.features(torch.zeros(32000)).shape[0] == 25  # 12 + 13: the 12.5 Hz rhythm


def test_shapes_and_ctc_loss_backward():
    torch.manual_seed(0)
    enc = StreamingAudioEncoder(TINY)
    x = torch.randn(2, 12, 640)
    hidden = enc(x)
    assert hidden.shape == (2, 12, 32) and enc.to_llm(hidden).shape == (2, 12, 48)
    log_probs = enc.ctc_logits(hidden).log_softmax(-1).transpose(0, 1)
    targets = torch.randint(1, 20, (2, 5))
    loss = torch.nn.functional.ctc_loss(log_probs, targets, torch.tensor([12, 12]), torch.tensor([5, 5]))
    loss.backward()
    assert enc.input.weight.grad is not None


def test_causal_with_bounded_lookahead():
    """Output at step t does not change when input after t + total look-ahead changes."""
    torch.manual_seed(0)
    enc = StreamingAudioEncoder(TINY).eval()
    x = torch.randn(1, 20, 640)
    t = 8
    changed = x.clone()
    changed[:, t + TINY.total_lookahead + 1 :] += 5.0
    with torch.no_grad():
        a, b = enc(x), enc(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])
    # and it does look ahead: changing step t + 1 changes step t
    ahead = x.clone()
    ahead[:, t + 1] += 5.0
    with torch.no_grad():
        assert not torch.allclose(enc(ahead)[:, t], a[:, t])


def test_clips_encoded_together_equal_each_clip_alone():
    """`encode_clips` pads clips of different lengths into one batch; every clip's states, its CTC loss and
    the encoder's gradients are those of encoding the clips one at a time (the padding reads as silence)."""
    torch.manual_seed(0)
    enc = StreamingAudioEncoder(TINY)
    clips = [torch.randn(n, 640) for n in (7, 19, 12)]
    together = enc.encode_clips(clips)
    for clip, hidden in zip(clips, together):
        assert hidden.shape == (clip.shape[0], 32)
        torch.testing.assert_close(hidden, enc(clip[None])[0], rtol=1e-5, atol=1e-6)
    targets = [torch.randint(1, 20, (3,)) for _ in clips]
    enc.ctc_loss_sum(clips, targets).backward()
    batched = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad()
    one_by_one = torch.stack([enc.ctc_loss_sum([clip], [t]) for clip, t in zip(clips, targets)]).sum()
    one_by_one.backward()
    for name, param in enc.named_parameters():
        if name in batched:
            torch.testing.assert_close(batched[name], param.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_ctc_posteriors_are_the_best_path_runs_averaged_and_moved_to_the_front():
    """Each run of one non-blank best-path token becomes one step (its steps' posteriors averaged, the blank
    dropped and the rest renormalised), in order; a blank between two equal tokens keeps them apart; blank
    and padded steps add nothing; the remaining steps are the blank alone (one-hot), so a clip recognised
    with certainty reads as token ids (components.training.pseudo_speech)."""
    from model.audio_encoder import CTC_BLANK

    torch.manual_seed(0)
    enc = StreamingAudioEncoder(TINY)
    best_path = [[0, 5, 5, 0, 5, 7, 7, 7, 0, 3], [0, 0, 9, 2, 2, 0, 0, 0, 0, 0]]  # row 1: 6 valid steps, then padding
    logits = torch.full((2, 10, 20), -8.0)
    for row, path in enumerate(best_path):
        for step, token in enumerate(path):
            logits[row, step, token] = 4.0 + step * 0.1  # steps of one run differ, so the average is visible
    logits[1, 6:, 4] = 20.0  # padding past the clip's end that would read as token 4 if counted
    enc.ctc_logits = lambda hidden: logits  # the compression alone: hidden states are not used below
    out = enc.ctc_posteriors(torch.zeros(2, 10, 32), lengths=torch.tensor([10, 6]))
    full = torch.softmax(logits, -1)
    blank = torch.nn.functional.one_hot(torch.tensor(CTC_BLANK), 20).float()
    assert out[0, :4].argmax(-1).tolist() == [5, 5, 7, 3] and (out[0, 4:] == blank).all()
    assert out[1, :2].argmax(-1).tolist() == [9, 2] and (out[1, 2:] == blank).all()
    expected = full[0, 5:8].mean(0)  # the run 7 7 7
    expected[CTC_BLANK] = 0
    torch.testing.assert_close(out[0, 2], expected / expected.sum())
    assert out[0, :4, CTC_BLANK].abs().sum() == 0 and out[1, :2, CTC_BLANK].abs().sum() == 0
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 10))  # every step a distribution over the tokenizer

    # Seconds are compressed apart (steps 0-11, 12-24, 25-: 12.5 a second): a run across a second's end is
    # cut there, and each second's tokens start at that second's first step.
    spoken = {2: 5, 11: 6, 12: 6, 13: 6, 20: 7, 26: 8}
    logits = torch.full((1, 30, 20), -8.0)
    logits[0, :, CTC_BLANK] = 4.0
    for step, token in spoken.items():
        logits[0, step, token] = 6.0
    out = enc.ctc_posteriors(torch.zeros(1, 30, 32))
    placed = {step: int(out[0, step].argmax()) for step in range(30) if out[0, step].argmax() != CTC_BLANK}
    assert placed == {0: 5, 1: 6, 12: 6, 13: 7, 25: 8}
