"""Thin wrappers around the ffmpeg and espeak-ng command lines used to synthesise media."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# Bit-exact flags and no metadata: the same parameters give the same bytes on the same ffmpeg build.
_FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
_BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]

CONTAINERS = {
    "mp4": [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
    ],
    "mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-threads", "1", "-c:a", "flac"],
    "webm": [
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "400k",
        "-threads",
        "1",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
    ],
}


class ToolMissing(RuntimeError):
    pass


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise ToolMissing(
            f"missing command(s): {', '.join(missing)}. On Debian: apt-get install -y ffmpeg espeak-ng "
            "(`make run` does this when you are root)."
        )


def run_ffmpeg(args: list[str], out: Path) -> Path:
    proc = subprocess.run([*_FFMPEG, *args, *_BITEXACT, str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {out}: {proc.stderr.strip()[-600:]}")
    return out


def speak(text: str, out_wav: Path, voice: str = "en", speed: int = 160, pitch: int = 50) -> Path:
    """Speak `text` with espeak-ng into a 22.05 kHz mono WAV."""
    proc = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out_wav), text],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed for {text!r}: {proc.stderr.strip()}")
    return out_wav


def encode_audio(wav: Path, out: Path) -> Path:
    """Re-encode speech by the target's extension (wav, flac, ogg/vorbis, mp3); a WAV target is the
    espeak-ng WAV as is (no ffmpeg process: a third of the speech items)."""
    if out.suffix == ".wav":
        shutil.copyfile(wav, out)
        return out
    codec = {
        ".wav": ["-c:a", "pcm_s16le"],
        ".flac": ["-c:a", "flac"],
        ".ogg": ["-c:a", "libvorbis"],
        ".mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    }[out.suffix]
    return run_ffmpeg(["-i", str(wav), *codec], out)
