"""Tiny media with known near duplicates: a clip and its re-encoded, half-size and trimmed copies, clips
that only look or sound alike, speech and its copies, a picture resized and re-encoded as JPEG.

`write_near_duplicate_corpus(root)` returns {file name: (kind, original name)} for every copy; every other
file must be kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
    folder.mkdir(parents=True)
    fractal = run_ffmpeg(["-f", "lavfi", "-i", "mandelbrot=s=160x108", "-frames:v", "1"], folder / "fractal.png")
    with Image.open(fractal) as img:
        img.resize((80, 54), Image.Resampling.LANCZOS).save(folder / "fractal_half.png")
        img.convert("RGB").save(folder / "fractal_jpeg.jpg", quality=70)
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=160x108", "-frames:v", "1"], folder / "testcard.png")
    return {"fractal_half.png": ("near", "fractal.png"), "fractal_jpeg.jpg": ("near", "fractal.png")}


def write_near_duplicate_corpus(root: Path) -> dict[str, tuple[str, str]]:
    """videos/, speech/ and images/ under root; returns copy name -> (kind, original name)."""
    return _write_videos(root / "videos") | _write_speech(root / "speech") | _write_images(root / "images")
