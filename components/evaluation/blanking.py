"""The media-blanked control: the same eval sample with its image, video frames and audio made neutral.

Every frame becomes a uniform mid-grey picture of the same size and the audio becomes digital silence of
the same length, instead of removing the media. Why replace rather than remove: removing changes the
prompt itself (no vision placeholders, a shorter interleaved stream, no audio steps), so a score change
would mix "the model lost the content" with "the model sees a layout it never trained on". With neutral
media of the same shape, render_prompt produces the same token ids and placeholder counts; only what
the encoders see carries no information. Grey is the mean of the [0, 1] pixel range (black or white
would be an extreme input); digital silence is what the speech clips hold between words.

The blanked sample goes through the same render and scoring code as the original, so the control
measures exactly what the model answers from the question and its priors alone. An audio-visual suite's
`modality_controls` blank one modality and keep the other (`blank_media(sample, {"audio"})`): the score
with the audio silent shows what the frames alone give, and the other way round.
"""

from __future__ import annotations

import io
import wave

from PIL import Image

from components.specs.evals import MODALITIES

NEUTRAL_GREY = (128, 128, 128)


def _grey_like(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        size = image.size
    out = io.BytesIO()
    Image.new("RGB", size, NEUTRAL_GREY).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _silence_like(wav: bytes) -> bytes:
    with wave.open(io.BytesIO(wav)) as w:
        params = w.getparams()
    out = io.BytesIO()
    with wave.open(out, "wb") as silent:
        silent.setparams(params)
        silent.writeframes(b"\x00" * (params.nframes * params.sampwidth * params.nchannels))
    return out.getvalue()


def has_media(sample: dict) -> bool:
    return any(_is_frame(name) or name == "wav" for name in sample)


def _is_frame(name: str) -> bool:
    return name.endswith(".jpg") or name == "jpg"


def blank_media(sample: dict, modalities: frozenset[str] | set[str] = frozenset(MODALITIES)) -> dict:
    """A copy of a WebDataset sample with its frames grey ("video": images and video frames alike) and/or its
    audio silent ("audio"), same sizes and metadata; by default both."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"blank_media: unknown modalities {sorted(unknown)}; use 'audio' and/or 'video'")
    blanked = dict(sample)
    for name, data in sample.items():
        if _is_frame(name) and "video" in modalities:
            blanked[name] = _grey_like(data)
        elif name == "wav" and "audio" in modalities:
            blanked[name] = _silence_like(data)
    return blanked
