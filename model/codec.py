"""The audio codec (REFERENCE.md section 4): 16 kHz audio <-> 4 codebooks at 16.67 Hz (60 ms frames),
one semantic codebook followed by three acoustic ones in a residual VQ.

Encoder: log-mel frames (60 ms hop) -> causal 1-D convolutions -> latent. Quantiser: residual VQ with
`codebook_sizes` (semantic first), straight-through gradients, commitment loss and k-means
initialisation from data. Decoder: codes -> summed code embeddings -> 1-D convolutions that may look
`decoder_lookahead` frames ahead -> log-mel -> waveform. The waveform stage is Griffin-Lim phase
reconstruction in every preset here; the full-size LongCat decoder is a learned 24 kHz vocoder, which is
not reproduced (its weights are not public): see `AudioCodecConfig.vocoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.audio_dsp import griffin_lim, log_mel, mel_filterbank


@dataclass(frozen=True)
class AudioCodecConfig:
    sample_rate: int = 16000
    hop: int = 960  # 60 ms -> 16.67 Hz
    win: int = 1920
    n_fft: int = 2048
    num_mel_bins: int = 80
    latent_size: int = 1024
    channels: int = 1536
    num_layers: int = 12  # encoder blocks
    decoder_layers: int = 50  # the decoder is the big half (~600M at full size, REFERENCE section 1)
    kernel_size: int = 5
    codebook_sizes: tuple[int, ...] = (8192, 1024, 1024, 1024)  # semantic + 3 acoustic
    decoder_lookahead: int = 3  # frames the streaming decoder may wait for
    commitment_weight: float = 0.25
    vocoder: str = "griffin_lim"
    griffin_lim_iterations: int = 32

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels at each time step (a GroupNorm would mix in statistics of future frames)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6) * self.weight


class ConvStack(nn.Module):
    """Residual 1-D conv blocks; the first `lookahead` blocks see one frame ahead, the rest are causal,
    so the whole stack waits for at most `lookahead` future frames."""

    def __init__(self, channels: int, num_layers: int, kernel_size: int, lookahead: int):
        super().__init__()
        self.pads = [(kernel_size - 1 - int(i < lookahead), int(i < lookahead)) for i in range(num_layers)]
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size) for _ in range(num_layers))
        self.norms = nn.ModuleList(ChannelRMSNorm(channels) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        for conv, norm, pad in zip(self.convs, self.norms, self.pads):
            x = x + conv(F.pad(F.gelu(norm(x)), pad))
        return x


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, sizes: tuple[int, ...]):
        super().__init__()
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(size, dim) * 0.1) for size in sizes)

    @torch.no_grad()
    def init_from_data(self, latents: torch.Tensor, iterations: int = 10) -> None:
        """k-means on [N, dim] latents for each stage in turn (on the residual of the previous stages)."""
        residual = latents.clone()
        generator = torch.Generator().manual_seed(0)
        for book in self.codebooks:
            n = min(book.shape[0], residual.shape[0])
            centres = residual[torch.randperm(residual.shape[0], generator=generator)[:n]].clone()
            for _ in range(iterations):
                assign = torch.cdist(residual, centres).argmin(-1)
                for k in range(n):
                    members = residual[assign == k]
                    if len(members):
                        centres[k] = members.mean(0)
            book.data[:n] = centres
            residual -= centres[torch.cdist(residual, centres).argmin(-1)]

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[N, dim] -> (quantised [N, dim] with straight-through gradient, codes [N, books], commit loss)."""
        residual, quantised, codes, commit = latents, torch.zeros_like(latents), [], latents.new_zeros(())
        for book in self.codebooks:
            index = torch.cdist(residual.detach(), book.detach()).argmin(-1)
            chosen = book[index]
            commit = commit + F.mse_loss(residual, chosen.detach()) + F.mse_loss(chosen, residual.detach())
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(index)
        return latents + (quantised - latents).detach(), torch.stack(codes, -1), commit

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(book[codes[..., i]] for i, book in enumerate(self.codebooks))


class AudioCodec(nn.Module):
    def __init__(self, cfg: AudioCodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder_in = nn.Conv1d(cfg.num_mel_bins, cfg.channels, 1)
        self.encoder = ConvStack(cfg.channels, cfg.num_layers, cfg.kernel_size, lookahead=0)
        self.encoder_out = nn.Conv1d(cfg.channels, cfg.latent_size, 1)
        self.quantizer = ResidualVQ(cfg.latent_size, cfg.codebook_sizes)
        self.decoder_in = nn.Conv1d(cfg.latent_size, cfg.channels, 1)
        self.decoder = ConvStack(cfg.channels, cfg.decoder_layers, cfg.kernel_size, lookahead=cfg.decoder_lookahead)
        self.decoder_out = nn.Conv1d(cfg.channels, cfg.num_mel_bins, 1)

    def mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[frames, mel] at the codec frame rate."""
        c = self.cfg
        return log_mel(waveform, c.sample_rate, c.n_fft, c.hop, c.win, c.num_mel_bins, center=True)

    def encode_latents(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.encoder_out(self.encoder(self.encoder_in(mel.t()[None])))
        return x[0].t()  # [frames, latent]

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Codes [frames, 4]: column 0 semantic, columns 1-3 acoustic."""
        return self.quantizer(self.encode_latents(self.mel(waveform)))[1]

    def decode_mel(self, quantised: torch.Tensor) -> torch.Tensor:
        return self.decoder_out(self.decoder(self.decoder_in(quantised.t()[None])))[0].t()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [frames, 4] -> waveform at `sample_rate`."""
        return self.vocode(self.decode_mel(self.quantizer.decode(codes)))

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel frames [frames, mel] -> waveform (a streaming decoder vocodes each span of final frames)."""
        c = self.cfg
        power = torch.linalg.pinv(mel_filterbank(c.num_mel_bins, c.n_fft, c.sample_rate)) @ mel.exp().t()
        return griffin_lim(power.clamp(min=0).sqrt(), c.n_fft, c.hop, c.win, c.griffin_lim_iterations)

    def loss(self, waveform: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Reconstruction (L1 on log-mel) + commitment: what the codec's own training stage minimises."""
        return self.mel_loss(self.mel(waveform))

    def mel_loss(self, mel: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """`loss` from precomputed log-mel frames [frames, mel] (a training loop computes them once)."""
        quantised, _, commit = self.quantizer(self.encode_latents(mel))
        recon = F.l1_loss(self.decode_mel(quantised), mel)
        return recon + self.cfg.commitment_weight * commit, {"mel_l1": recon.detach(), "commit": commit.detach()}
