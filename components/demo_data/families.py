"""One generator per task family. Each draws its parameters from `rng`, writes its media next to
`stem` and returns the labels (questions and answers, captions, transcripts) for the sidecar.

`params(rng)` and `render(params, stem, tmp)` are separate so the corpus can reject parameter draws that
belong to the other split before spending time on rendering.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from components.demo_data.synth import CONTAINERS, encode_audio, run_ffmpeg, speak

COLOURS = ["red", "green", "blue", "yellow", "white", "magenta", "cyan", "orange"]
BACKGROUNDS = ["black", "gray", "navy", "darkgreen", "maroon"]
DIRECTIONS = ["left", "right", "up", "down"]
RESOLUTIONS = [(320, 240), (480, 270), (640, 360), (256, 256), (426, 240)]
WORDS = ["apple", "river", "planet", "guitar", "window", "tiger", "candle", "rocket", "garden", "pencil"]
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
]
VOICES = ["en", "en+f3", "en+m3", "en-us", "en+f2"]


def _motion(
    direction: str, index: int, count: int, size: tuple[int, int], box: int, duration: float
) -> tuple[str, str]:
    """ffmpeg overlay x/y expressions for a square moving across 60% of the frame over the clip."""
    w, h = size
    lane = (index + 1) / (count + 1)
    if direction in ("left", "right"):
        span = 0.6 * (w - box)
        x0 = 0.2 * (w - box) if direction == "right" else 0.8 * (w - box)
        sign = "+" if direction == "right" else "-"
        return f"{x0:.1f}{sign}t*{span / duration:.4f}", f"{lane * (h - box):.1f}"
    span = 0.6 * (h - box)
    y0 = 0.2 * (h - box) if direction == "down" else 0.8 * (h - box)
    sign = "+" if direction == "down" else "-"
    return f"{lane * (w - box):.1f}", f"{y0:.1f}{sign}t*{span / duration:.4f}"


# ---------------------------------------------------------------- video QA: moving coloured shapes
@dataclass(frozen=True)
class VideoQAParams:
    colour: str
    background: str
    direction: str
    count: int
    duration: float
    size: tuple[int, int]
    fps: int
    container: str
    with_audio: bool

    @property
    def partition_key(self) -> str:
        return f"{self.colour}:{self.direction}:{self.count}:{self.background}"


def video_qa_params(rng: random.Random, long_clip: bool = False) -> VideoQAParams:
    return VideoQAParams(
        colour=rng.choice(COLOURS),
        background=rng.choice(BACKGROUNDS),
        direction=rng.choice(DIRECTIONS),
        count=rng.randint(1, 3),
        duration=300.0 if long_clip else float(rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30])),
        size=(160, 120) if long_clip else rng.choice(RESOLUTIONS),
        fps=rng.choice([10, 15, 24, 25]),
        container=rng.choice(["mp4", "mp4", "webm", "mkv"]),
        with_audio=rng.random() < 0.6,
    )


def render_video_qa(p: VideoQAParams, stem: Path, tmp: Path) -> tuple[Path, dict]:
    w, h = p.size
    box = max(16, min(w, h) // 8)
    args = ["-f", "lavfi", "-i", f"color=c={p.background}:s={w}x{h}:r={p.fps}:d={p.duration}"]
    for _ in range(p.count):
        args += ["-f", "lavfi", "-i", f"color=c={p.colour}:s={box}x{box}:r={p.fps}:d={p.duration}"]
    chain, last = [], "0:v"
    for i in range(p.count):
        x, y = _motion(p.direction, i, p.count, p.size, box, p.duration)
        chain.append(f"[{last}][{i + 1}:v]overlay=x='{x}':y='{y}':shortest=1[v{i}]")
        last = f"v{i}"
    if p.with_audio:
        args += ["-f", "lavfi", "-i", f"sine=f=220:sample_rate=44100:d={p.duration}"]
    args += ["-filter_complex", ";".join(chain), "-map", f"[{last}]"]
    if p.with_audio:
        args += ["-map", f"{p.count + 1}:a"]
    out = stem.with_suffix("." + p.container)
    run_ffmpeg([*args, *CONTAINERS[p.container], "-t", str(p.duration)], out)
    noun = "square" if p.count == 1 else "squares"
    labels = {
        "task_family": "video_qa",
        "colour": p.colour,
        "direction": p.direction,
        "count": p.count,
        "qa": [
            {
                "question": f"Which direction do the {p.colour} {noun} move?",
                "answer": p.direction,
                "choices": DIRECTIONS,
            },
            {"question": "What colour are the moving squares?", "answer": p.colour, "choices": COLOURS},
            {"question": "How many squares are there?", "answer": str(p.count), "choices": ["1", "2", "3"]},
        ],
    }
    return out, labels


# ---------------------------------------------------------------- audio-visual QA: needs both streams
@dataclass(frozen=True)
class AVQAParams:
    variant: str  # "beep": colour on screen at the beep; "word": word spoken while the square moved left
    colours: tuple[str, ...]
    directions: tuple[str, ...]
    words: tuple[str, ...]
    event_segment: int
    segment_s: float
    size: tuple[int, int]
    container: str
    voice: str

    @property
    def partition_key(self) -> str:
        return f"{self.variant}:{self.colours}:{self.directions}:{self.words}:{self.event_segment}"


def av_qa_params(rng: random.Random) -> AVQAParams:
    variant = rng.choice(["beep", "word"])
    num = rng.randint(3, 4)
    event = rng.randrange(num)
    directions = [rng.choice(["right", "up", "down"]) for _ in range(num)]
    if variant == "word":
        directions[event] = "left"
    return AVQAParams(
        variant=variant,
        colours=tuple(rng.sample(COLOURS, num)),
        directions=tuple(directions),
        words=tuple(rng.sample(WORDS, num)),
        event_segment=event,
        segment_s=float(rng.choice([1.5, 2.0, 2.5])),
        size=rng.choice(RESOLUTIONS),
        container=rng.choice(["mp4", "mkv", "webm"]),
        voice=rng.choice(VOICES),
    )


def render_av_qa(p: AVQAParams, stem: Path, tmp: Path) -> tuple[Path, dict]:
    w, h = p.size
    box = max(16, min(w, h) // 8)
    d = p.segment_s
    inputs: list[list[str]] = []  # one ffmpeg input per entry; its index is its position
    filters: list[str] = []

    def add_input(*args: str) -> int:
        inputs.append(list(args))
        return len(inputs) - 1

    pairs = ""
    for j, colour in enumerate(p.colours):
        background = colour if p.variant == "beep" else "black"
        square = "black" if p.variant == "beep" else colour  # beep backgrounds take every colour
        bg = add_input("-f", "lavfi", "-i", f"color=c={background}:s={w}x{h}:r=15:d={d}")
        fg = add_input("-f", "lavfi", "-i", f"color=c={square}:s={box}x{box}:r=15:d={d}")
        x, y = _motion(p.directions[j], 0, 1, p.size, box, d)
        filters.append(f"[{bg}:v][{fg}:v]overlay=x='{x}':y='{y}':shortest=1,setsar=1[sv{j}]")
        to_mono = "aresample=16000,aformat=sample_rates=16000:channel_layouts=mono"
        if p.variant == "beep":
            loud = 0.6 if j == p.event_segment else 0.0
            tone = add_input("-f", "lavfi", "-i", f"sine=f=1000:sample_rate=16000:d={d}")
            filters.append(
                f"[{tone}:a]volume='if(between(t,{d * 0.25:.2f},{d * 0.75:.2f}),{loud},0)':eval=frame,{to_mono}[sa{j}]"
            )
        else:
            wav = speak(p.words[j], tmp / f"{stem.name}.w{j}.wav", voice=p.voice)
            word = add_input("-i", str(wav))
            filters.append(f"[{word}:a]{to_mono},apad,atrim=0:{d}[sa{j}]")
        pairs += f"[sv{j}][sa{j}]"
    filters.append(f"{pairs}concat=n={len(p.colours)}:v=1:a=1[v][a]")
    out = stem.with_suffix("." + p.container)
    args = [a for spec in inputs for a in spec]
    run_ffmpeg(
        [*args, "-filter_complex", ";".join(filters), "-map", "[v]", "-map", "[a]", *CONTAINERS[p.container]], out
    )
    if p.variant == "beep":
        qa = {
            "question": "Which colour was on screen when the beep sounded?",
            "answer": p.colours[p.event_segment],
            "choices": list(COLOURS),
        }
    else:
        qa = {
            "question": "Which word was spoken while the square moved left?",
            "answer": p.words[p.event_segment],
            "choices": list(p.words),
        }
    labels = {
        "task_family": "av_qa",
        "variant": p.variant,
        "segments": [
            {
                "start_s": j * d,
                "end_s": (j + 1) * d,
                "colour": p.colours[j],
                "direction": p.directions[j],
                **({"word": p.words[j]} if p.variant == "word" else {"beep": j == p.event_segment}),
            }
            for j in range(len(p.colours))
        ],
        "qa": [qa],
    }
    return out, labels


# ---------------------------------------------------------------- spoken QA: spoken arithmetic
@dataclass(frozen=True)
class SpokenQAParams:
    a: int
    b: int
    op: str
    voice: str
    speed: int
    ext: str

    @property
    def partition_key(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "plus" else self.a - self.b


def spoken_qa_params(rng: random.Random) -> SpokenQAParams:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    op = rng.choice(["plus", "minus"])
    if op == "minus" and b > a:
        a, b = b, a
    return SpokenQAParams(
        a, b, op, rng.choice(VOICES), rng.choice([140, 160, 180]), rng.choice([".wav", ".flac", ".ogg"])
    )


def render_spoken_qa(p: SpokenQAParams, stem: Path, tmp: Path) -> tuple[Path, dict]:
    question = f"What is {NUMBER_WORDS[p.a]} {p.op} {NUMBER_WORDS[p.b]}?"
    wav = speak(question, tmp / f"{stem.name}.wav", voice=p.voice, speed=p.speed)
    out = encode_audio(wav, stem.with_suffix(p.ext))
    return out, {
        "task_family": "voice_qa",
        "transcript": question,
        "qa": [{"question": question, "answer": str(p.answer)}],
    }


# ---------------------------------------------------------------- speech-text pairs (ASR / TTS)
@dataclass(frozen=True)
class SpeechParams:
    words: tuple[str, ...]
    voice: str
    speed: int
    ext: str

    @property
    def partition_key(self) -> str:
        return " ".join(self.words)


def speech_params(rng: random.Random) -> SpeechParams:
    words = tuple(rng.sample(WORDS, rng.randint(2, 4)) + [rng.choice(COLOURS)])
    return SpeechParams(words, rng.choice(VOICES), rng.choice([140, 160, 180]), rng.choice([".wav", ".flac", ".mp3"]))


def render_speech(p: SpeechParams, stem: Path, tmp: Path) -> tuple[Path, dict]:
    text = " ".join(p.words)
    wav = speak(text, tmp / f"{stem.name}.wav", voice=p.voice, speed=p.speed)
    return encode_audio(wav, stem.with_suffix(p.ext)), {"task_family": "asr", "transcript": text}


# ---------------------------------------------------------------- image-caption pairs
@dataclass(frozen=True)
class ImageParams:
    shape: str
    colour: str
    background: str
    size: tuple[int, int]
    ext: str

    @property
    def partition_key(self) -> str:
        return f"{self.shape}:{self.colour}:{self.background}"


_RGB = {
    "red": (220, 30, 30),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "magenta": (210, 40, 200),
    "cyan": (40, 210, 220),
    "orange": (250, 150, 30),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "navy": (0, 0, 110),
    "darkgreen": (0, 90, 0),
    "maroon": (120, 0, 0),
}


def image_params(rng: random.Random) -> ImageParams:
    return ImageParams(
        rng.choice(["circle", "square", "triangle"]),
        rng.choice(COLOURS),
        rng.choice(BACKGROUNDS),
        rng.choice([(448, 448), (640, 480), (336, 224), (1024, 768)]),
        rng.choice([".png", ".jpg"]),
    )


def render_image(p: ImageParams, stem: Path, tmp: Path) -> tuple[Path, dict]:
    w, h = p.size
    img = Image.new("RGB", p.size, _RGB[p.background])
    draw = ImageDraw.Draw(img)
    r = min(w, h) // 4
    cx, cy = w // 2, h // 2
    if p.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_RGB[p.colour])
    elif p.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=_RGB[p.colour])
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=_RGB[p.colour])
    out = stem.with_suffix(p.ext)
    img.save(out, **({"quality": 92} if p.ext == ".jpg" else {}))
    caption = f"a {p.colour} {p.shape} on a {p.background} background"
    return out, {"task_family": "image_caption", "caption": caption, "shape": p.shape, "colour": p.colour}


# ---------------------------------------------------------------- plain text
@dataclass(frozen=True)
class TextParams:
    facts: tuple[tuple[int, int], ...]

    @property
    def partition_key(self) -> str:
        return str(self.facts)


def text_params(rng: random.Random) -> TextParams:
    return TextParams(tuple((rng.randint(0, 9), rng.randint(0, 9)) for _ in range(rng.randint(4, 8))))


def render_text(p: TextParams, stem: Path, tmp: Path) -> tuple[Path, dict]:
    lines = [f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}." for a, b in p.facts]
    out = stem.with_suffix(".txt")
    out.write_text(" ".join(lines) + "\n")
    return out, {"task_family": "text"}
