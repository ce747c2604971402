"""Tiny media with known near duplicates: a clip and its re-encoded, half-size and trimmed copies, clips
that only look or sound alike, speech and its copies, real photographs and their copies.

`write_near_duplicate_corpus(root)` returns {file name: (kind, original name)} for every copy; every other
file must be kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from components.demo_data.synth import run_ffmpeg, speak

_TESTSRC = ["-f", "lavfi", "-i", "testsrc2=s=64x64:r=10:d=4"]


def _noise(seed: int) -> list[str]:
    return ["-f", "lavfi", "-i", f"anoisesrc=d=4:c=pink:r=16000:seed={seed}"]


_CLIP = [*_TESTSRC, *_noise(1)]
_H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
SENTENCE = "the quick brown fox jumps over the lazy dog"


def _write_videos(folder: Path) -> dict[str, tuple[str, str]]:
    folder.mkdir(parents=True)
    clip = run_ffmpeg([*_CLIP, *_H264], folder / "clip.mp4")
    run_ffmpeg(["-i", str(clip), "-c:v", "libvpx", "-b:v", "100k", "-c:a", "libvorbis"], folder / "clip_vp8.webm")
    run_ffmpeg(["-i", str(clip), "-vf", "scale=32:32", "-c:v", "libx264", "-c:a", "aac"], folder / "clip_half.mp4")
    run_ffmpeg(["-ss", "1", "-i", str(clip), "-c:v", "libx264", "-c:a", "aac"], folder / "clip_trimmed.mp4")
    shutil.copy(clip, folder / "clip_exact.mp4")
    # Another pattern with other noise, and the same pictures with another soundtrack: both other clips.
    mandelbrot = ["-f", "lavfi", "-i", "mandelbrot=s=64x64:r=10", *_noise(2), "-t", "4"]
    run_ffmpeg([*mandelbrot, *_H264], folder / "mandelbrot.mp4")
    run_ffmpeg([*_TESTSRC, *_noise(9), *_H264], folder / "clip_other_sound.mp4")
    near = ("near", "clip.mp4")
    copies = {"clip_vp8.webm": near, "clip_half.mp4": near, "clip_trimmed.mp4": near}
    return copies | {"clip_exact.mp4": ("exact", "clip.mp4")}


def _write_speech(folder: Path) -> dict[str, tuple[str, str]]:
    folder.mkdir(parents=True)
    wav = speak(SENTENCE, folder / "fox.wav")
    run_ffmpeg(["-i", str(wav), "-c:a", "libopus", "-b:a", "24k"], folder / "fox_opus.ogg")
    run_ffmpeg(["-ss", "1", "-i", str(wav)], folder / "fox_trimmed.wav")
    speak(SENTENCE.replace("dog", "cat"), folder / "fox_cat.wav")  # one word differs: another utterance
    speak("seven plus five makes twelve said the teacher", folder / "teacher.wav")
    return {"fox_opus.ogg": ("near", "fox.wav"), "fox_trimmed.wav": ("near", "fox.wav")}


def _write_images(folder: Path) -> dict[str, tuple[str, str]]:
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True)
    china, flower = (Image.fromarray(np.asarray(img)) for img in load_sample_images().images)
    china = china.resize((160, 107))
    china.save(folder / "china.png")
    china.resize((80, 53)).save(folder / "china_half.png")
    china.save(folder / "china_jpeg.jpg", quality=70)
    flower.resize((160, 107)).save(folder / "flower.png")
    return {"china_half.png": ("near", "china.png"), "china_jpeg.jpg": ("near", "china.png")}


def write_near_duplicate_corpus(root: Path) -> dict[str, tuple[str, str]]:
    """videos/, speech/ and images/ under root; returns copy name -> (kind, original name)."""
    return _write_videos(root / "videos") | _write_speech(root / "speech") | _write_images(root / "images")
