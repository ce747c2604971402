"""Small spoken-word sets for the audio-encoder CTC tests: the demo corpus's ASR sentences (its word lists and
voices, components.demo_data.families) spoken by espeak-ng, one voice held out for evaluation."""

from __future__ import annotations

import random
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components.demo_data.families import COLOURS, WORDS, speech_params
from components.demo_data.synth import speak

# Fixed espeak-ng voices (the thresholds in test_audio_encoder_ctc.py were measured with them): four for
# training, one held out.
TRAIN_VOICES = ["en", "en+f3", "en+m3", "en-us"]
HELD_OUT_VOICE = "en+f2"


@dataclass(frozen=True)
class Clip:
    text: str
    voice: str
    waveform: torch.Tensor  # 16 kHz mono in [-1, 1]


def _say(job: tuple[str, str, int, Path]) -> Clip:
    text, voice, speed, stem = job
    with wave.open(str(speak(text, stem.with_suffix(".wav"), voice=voice, speed=speed))) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32)
    # Band-limited resampling to 16 kHz in the frequency domain (an ffmpeg process per clip doubles the time).
    n_out = len(pcm) * 16000 // rate
    spectrum = torch.fft.rfft(torch.from_numpy(pcm / 32768.0))[: n_out // 2 + 1]
    return Clip(text, voice, torch.fft.irfft(spectrum, n=n_out).float() * (n_out / len(pcm)))


def speak_all(jobs: list[tuple[str, str, int]], folder: Path) -> list[Clip]:
    """Speak (text, voice, words per minute) jobs into 16 kHz clips, two at a time (espeak + ffmpeg processes)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(_say, [(t, v, s, folder / f"clip{i}") for i, (t, v, s) in enumerate(jobs)]))


def asr_sentences(count: int, voices: list[str], seed: int) -> list[tuple[str, str, int]]:
    """`count` demo-style ASR sentences (2-4 words and a colour, components.demo_data.families.speech_params)."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        p = speech_params(rng, voices)
        jobs.append((" ".join(p.words), p.voice.speaker, p.voice.speed))
    return jobs


def single_words(voice: str) -> list[tuple[str, str, int]]:
    """Every demo word and colour once, in one voice: the probe of whether features tell words apart."""
    return [(word, voice, 160) for word in WORDS + COLOURS]
