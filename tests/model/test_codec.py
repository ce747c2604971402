"""The codec round-trips real speech into 4 codebooks at 16.67 Hz and back to audible audio."""

import wave

import numpy as np
import torch

from model.codec import AudioCodec, AudioCodecConfig

TINY = AudioCodecConfig(latent_size=32, channels=64, num_layers=2, decoder_layers=2, codebook_sizes=(64, 32, 32, 32))


def _speech(shared_media) -> torch.Tensor:
    with wave.open(str(shared_media / "audio" / "front_center.wav")) as w:
        rate, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
        channels = w.getnchannels()
    mono = data.reshape(-1, channels).mean(1) / 32768.0
    return torch.tensor(mono[:: rate // 16000], dtype=torch.float32)  # 48 kHz -> 16 kHz


def test_codes_are_four_books_at_16_67_hz():
    codec = AudioCodec(TINY)
    codes = codec.encode(torch.randn(16000) * 0.1)
    assert codes.shape[1] == 4 and abs(codes.shape[0] - 16000 / 960) <= 1.5
    assert codes[:, 0].max() < 64 and codes[:, 1:].max() < 32


def test_round_trip_of_speech_keeps_its_spectrogram(shared_media):
    torch.manual_seed(0)
    speech = _speech(shared_media)
    codec = AudioCodec(TINY)
    with torch.no_grad():
        codec.quantizer.init_from_data(codec.encode_latents(codec.mel(speech)))
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    first = None
    for _ in range(150):  # the codec's own training stage, in miniature
        loss, parts = codec.loss(speech)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else parts["mel_l1"].item()
    assert parts["mel_l1"].item() < 0.5 * first
    with torch.no_grad():
        rebuilt = codec.decode(codec.encode(speech))
    original_mel, rebuilt_mel = codec.mel(speech), codec.mel(rebuilt[: speech.shape[0]])
    n = min(len(original_mel), len(rebuilt_mel))
    corr = np.corrcoef(original_mel[:n].flatten().numpy(), rebuilt_mel[:n].flatten().numpy())[0, 1]
    assert corr > 0.7, corr
    assert rebuilt.abs().max() > 1e-3  # real audio, not silence


def test_streaming_decoder_waits_for_at_most_its_lookahead():
    cfg = AudioCodecConfig(latent_size=16, channels=32, num_layers=4, decoder_layers=4, codebook_sizes=(8, 8, 8, 8))
    codec = AudioCodec(cfg).eval()
    q = torch.randn(20, cfg.latent_size)
    changed = q.clone()
    changed[10 + cfg.decoder_lookahead + 1 :] += 3
    with torch.no_grad():
        a, b = codec.decode_mel(q), codec.decode_mel(changed)
    assert torch.allclose(a[:11], b[:11], atol=1e-5)
    assert not torch.allclose(a[11:], b[11:])
