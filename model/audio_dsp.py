"""Audio signal processing shared by the audio encoder and the codec: mel filterbanks, log-mel
features and Griffin-Lim phase reconstruction. Pure torch, so it runs wherever the model runs."""

from __future__ import annotations

import math

import torch


def mel_filterbank(num_bins: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """[num_bins, n_fft // 2 + 1] triangular filters on the HTK mel scale (what Kaldi fbank uses)."""

    def to_mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    mels = torch.linspace(to_mel(20.0), to_mel(sample_rate / 2), num_bins + 2)
    hz = 700.0 * (torch.exp(mels / 1127.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lower) / (centre - lower)
    down = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def log_mel(waveform: torch.Tensor, sample_rate: int, n_fft: int, hop: int, win: int, num_bins: int,
            center: bool = False) -> torch.Tensor:  # fmt: skip
    """Log-mel power spectrogram [frames, num_bins] of a mono waveform in [-1, 1]."""
    spec = torch.stft(waveform, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                      center=center, return_complex=True).abs().pow(2)  # fmt: skip
    mel = mel_filterbank(num_bins, n_fft, sample_rate) @ spec
    return torch.log(mel.clamp(min=1e-10)).transpose(0, 1)


def griffin_lim(magnitude: torch.Tensor, n_fft: int, hop: int, win: int, iterations: int = 32) -> torch.Tensor:
    """A waveform whose STFT magnitude approximates `magnitude` [n_fft // 2 + 1, frames]."""
    window = torch.hann_window(win)
    generator = torch.Generator().manual_seed(0)  # deterministic decoding
    phase = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=generator))
    for _ in range(iterations):
        wave = torch.istft(magnitude * phase, n_fft, hop_length=hop, win_length=win, window=window)
        rebuilt = torch.stft(wave, n_fft, hop_length=hop, win_length=win, window=window, return_complex=True)
        phase = torch.exp(1j * torch.angle(rebuilt[:, : magnitude.shape[1]]))
    return torch.istft(magnitude * phase, n_fft, hop_length=hop, win_length=win, window=window)
