"""Streaming audio encoder (REFERENCE.md section 4): 80-dim fbank, 8x frame splicing to 80 ms (12.5 Hz),
FSMN layers instead of self-attention, causal except a one-frame look-ahead in the last layers, CTC head.

Each FSMN layer is: RMSNorm -> linear up + ReLU -> linear down to the memory width -> a depthwise 1-D
convolution over time (the "memory block") reaching `left_context` frames back and `lookahead` frames
ahead -> linear back to the model width, with a residual. Because every layer only looks back (and
the last ones one frame ahead), the output at frame t depends on input up to t + total look-ahead.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.audio_dsp import log_mel
from model.layout import audio_steps_per_chunk

# The CTC blank: index 0 of the CTC vocabulary, which is the text tokenizer's (model.tokenizer): id 0 is its
# <|pad|> token, never part of a transcript.
CTC_BLANK = 0


@dataclass(frozen=True)
class AudioEncoderConfig:
    num_mel_bins: int = 80
    sample_rate: int = 16000
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    splice: int = 8  # 8 x 10 ms frames -> one 80 ms step
    hidden_size: int = 1536
    ffn_size: int = 6144
    memory_size: int = 1536
    num_layers: int = 28  # ~596M without the CTC head and the projector (REFERENCE: roughly 600M)
    left_context: int = 10
    lookahead_layers: int = 6  # the last 6 layers see one step ahead
    ctc_vocab_size: int = 8192  # CTC blank is index 0 of this vocabulary
    output_size: int = 6144  # projector into the LLM width
    norm_eps: float = 1e-5

    @property
    def total_lookahead(self) -> int:
        return min(self.lookahead_layers, self.num_layers)

    @property
    def steps_per_second(self) -> float:
        return 1000.0 / (self.frame_shift_ms * self.splice)  # 12.5 at 10 ms x 8


def fbank(waveform: torch.Tensor, cfg: AudioEncoderConfig) -> torch.Tensor:
    """Log-mel filterbank features [frames, num_mel_bins] (10 ms shift, 25 ms window)."""
    hop = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
    win = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    # Pad the tail so N samples give N / hop frames: 1 s -> 100 frames -> 12 steps, 2 s -> 25 steps.
    n_fft = 1 << (win - 1).bit_length()
    waveform = torch.nn.functional.pad(waveform, (0, n_fft - hop))
    return log_mel(waveform, cfg.sample_rate, n_fft, hop, win, cfg.num_mel_bins)


def splice_frames(features: torch.Tensor, splice: int) -> torch.Tensor:
    """Stack each run of `splice` frames: [T, D] -> [T // splice, splice * D] (the tail is dropped)."""
    steps = features.shape[0] // splice
    return features[: steps * splice].reshape(steps, splice * features.shape[1])


class FSMNLayer(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig, lookahead: int):
        super().__init__()
        self.left, self.lookahead = cfg.left_context, lookahead
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.up = nn.Linear(cfg.hidden_size, cfg.ffn_size)
        self.down = nn.Linear(cfg.ffn_size, cfg.memory_size, bias=False)
        self.memory = nn.Conv1d(cfg.memory_size, cfg.memory_size, kernel_size=self.left + 1 + lookahead,
                                groups=cfg.memory_size, bias=False)  # fmt: skip
        self.out = nn.Linear(cfg.memory_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: [batch, time, hidden]; `valid` [batch, time, 1]: False at the padding after a shorter clip."""
        p = self.down(F.relu(self.up(self.norm(x))))  # [B, T, M]
        if valid is not None:  # the memory block is the only op across time: padding must read as silence (0)
            p = p * valid
        padded = F.pad(p.transpose(1, 2), (self.left, self.lookahead))  # past on the left, look-ahead on the right
        memory = p + self.memory(padded).transpose(1, 2)
        return x + self.out(memory)


class StreamingAudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.input = nn.Linear(cfg.splice * cfg.num_mel_bins, cfg.hidden_size)
        first_lookahead_layer = cfg.num_layers - cfg.lookahead_layers
        self.layers = nn.ModuleList(
            FSMNLayer(cfg, 1 if i >= first_lookahead_layer else 0) for i in range(cfg.num_layers)
        )
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.ctc_head = nn.Linear(cfg.hidden_size, cfg.ctc_vocab_size)
        self.projector = nn.Sequential(nn.Linear(cfg.hidden_size, cfg.output_size), nn.GELU(),
                                       nn.Linear(cfg.output_size, cfg.output_size))  # fmt: skip

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Spliced fbank [steps, splice * mel] at 12.5 Hz for a 16 kHz mono waveform."""
        return splice_frames(fbank(waveform, self.cfg), self.cfg.splice)

    def forward(self, spliced: torch.Tensor, lengths: torch.Tensor | None = None,
                ctc_posteriors: bool = False) -> torch.Tensor:  # fmt: skip
        """[batch, steps, splice * mel] -> hidden states [batch, steps, hidden], or with `ctc_posteriors` the
        CTC head's posteriors [batch, steps, ctc_vocab_size] (`ctc_posteriors`: computed here, inside the
        forward, so a sharded encoder's root FSDP unit holds the head's weights gathered for its backward).
        `lengths`: each row's clip length when shorter clips are right-padded; each clip's outputs then equal
        those of the clip alone (the memory blocks read zeros past its end, as at the end of a lone clip)."""
        valid = None
        if lengths is not None:
            valid = torch.arange(spliced.shape[1], device=spliced.device)[None] < lengths.to(spliced.device)[:, None]
            valid = valid[..., None].to(spliced.dtype)
        x = self.input(spliced)
        for layer in self.layers:
            x = layer(x, valid)
        hidden = self.norm(x)
        return self.ctc_posteriors(hidden, lengths) if ctc_posteriors else hidden

    def encode_clips(self, clips: list[torch.Tensor], ctc_posteriors: bool = False) -> list[torch.Tensor]:
        """Hidden states [steps, hidden] (or CTC posteriors, see `forward`) of each clip [steps, splice * mel],
        in one padded batch: one pass of small kernels instead of one per clip (3.5x faster forward + backward
        for 12 tiny-preset clips)."""
        lengths = torch.tensor([clip.shape[0] for clip in clips])
        out = self(nn.utils.rnn.pad_sequence(clips, batch_first=True), lengths, ctc_posteriors)
        return [out[i, :n] for i, n in enumerate(lengths.tolist())]

    def ctc_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.ctc_head(hidden)

    def ctc_loss_sum(self, clips: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Summed CTC negative log-likelihood of each clip's target ids (blank `CTC_BLANK`). A clip too short
        for its transcript contributes 0 (zero_infinity), not inf."""
        log_probs = [F.log_softmax(self.ctc_logits(hidden).float(), dim=-1) for hidden in self.encode_clips(clips)]
        return F.ctc_loss(nn.utils.rnn.pad_sequence(log_probs), torch.cat(targets).long(),
                          torch.tensor([lp.shape[0] for lp in log_probs]), torch.tensor([len(t) for t in targets]),
                          blank=CTC_BLANK, reduction="sum", zero_infinity=True)  # fmt: skip

    @torch.no_grad()
    def ctc_greedy_decode(self, clip: torch.Tensor) -> list[int]:
        """Best-path CTC decoding of one clip [steps, splice * mel]: argmax per step, repeats merged, blanks dropped."""
        best = self.ctc_logits(self(clip[None]))[0].argmax(-1).tolist()
        return [t for i, t in enumerate(best) if t != CTC_BLANK and (i == 0 or t != best[i - 1])]

    def to_llm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.projector(hidden)

    def ctc_posteriors(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The CTC head's posteriors [batch, steps, ctc_vocab_size], compressed the way its best path reads
        them (a "CTC compressor", as speech LLMs with CTC encoders feed their LLM), one second at a time:
        within each second's steps (12 or 13, the positions `model.layout` gives that second's audio) the
        steps of each run of one non-blank best-path token are averaged into one step, and the runs move to
        the front of the second in their order. The LLM then reads each second as its recognised tokens on
        adjacent positions, not ~1 spoken step in 3 among blanks (measured in the README: it did not learn to
        read those out), and what was said stays in the second it was said in, as a live stream needs (and
        omni_av asks about). A recognised step is its run's posteriors without the blank, renormalised; every
        other step is the blank alone (which mixes the `<|pad|>` row: `CTC_BLANK` is its id). A perfect
        recogniser's rows are then one-hot: token ids at the placeholders, which is what text-only
        pseudo-speech feeds (components.training.pseudo_speech). Step counts are unchanged, so the
        placeholders the renderer laid out still fit. `lengths`: valid steps per row; padding adds nothing."""
        posteriors = F.softmax(self.ctc_logits(hidden).float(), dim=-1)
        batch, steps, vocab = posteriors.shape
        device = posteriors.device
        rate = self.cfg.steps_per_second
        per_second = audio_steps_per_chunk(math.ceil(steps / rate), steps, rate)  # the renderer's split
        edges = torch.tensor([0, *itertools.accumulate(per_second[:-1])], device=device)  # each second's first step
        second = torch.searchsorted(edges, torch.arange(steps, device=device), right=True) - 1
        best = posteriors.argmax(-1)
        spoken = best != CTC_BLANK
        if lengths is not None:
            spoken &= torch.arange(steps, device=device)[None] < lengths.to(device)[:, None]
        opens = torch.ones_like(best[:, :1], dtype=torch.bool)
        # a run ends at a different token, at a blank (so "a <blank> a" stays two tokens) and at a second's end
        new_run = torch.cat([opens, (best[:, 1:] != best[:, :-1]) | (second[1:] != second[:-1])[None]], dim=1)
        starts = spoken & new_run
        runs_so_far = torch.cat([torch.zeros_like(best[:, :1]), torch.cumsum(starts.long(), dim=1)], dim=1)
        runs_before_second = runs_so_far[:, edges][:, second]  # [batch, steps]
        slot = edges[second][None] + runs_so_far[:, 1:] - 1 - runs_before_second
        slot = torch.where(spoken, slot, steps)  # blanks and padding go to a discarded extra slot
        index = slot[..., None].expand(-1, -1, vocab)
        sums = posteriors.new_zeros(batch, steps + 1, vocab).scatter_add(1, index, posteriors)
        counts = posteriors.new_zeros(batch, steps + 1).scatter_add(1, slot, torch.ones_like(posteriors[..., 0]))
        compressed = sums[:, :steps].index_fill(-1, torch.tensor([CTC_BLANK], device=device), 0.0)
        mass = compressed.sum(-1, keepdim=True)
        recognised = counts[:, :steps, None] > 0
        blank = F.one_hot(torch.tensor(CTC_BLANK, device=device), vocab).to(compressed.dtype)
        # a run's average without the blank, renormalised, is its sum over the same sum; mass > 0 there (softmax)
        return torch.where(recognised, compressed / mass.clamp(min=torch.finfo(mass.dtype).tiny), blank)
