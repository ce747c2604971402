"""Render one WebDataset sample (as `omnistage ingest` wrote it) into what the omni model consumes:
token ids with placeholders, labels (IGNORE except on what the task should produce), frames for the
ViT and spliced fbank features for the audio encoder.

| task family | sequence | trained on |
|---|---|---|
| text | `<bos>` text `<eos>` | every next token |
| image_caption | vision placeholders, caption `<eos>` | the caption |
| video_qa, av_qa | 1-second interleaved stream, question, answer `<eos>` | the answer |
| voice_qa | audio stream (spoken question), answer `<eos>` | the answer |
| asr | audio stream, transcript `<eos>` | the transcript |

QA samples with several questions pick one by a stable hash of the key and `seed`. Speech with a
transcript (asr, voice_qa) also carries the audio encoder's CTC targets (`ctc_target_ids`).
"""

from __future__ import annotations

import hashlib
import io
import json
import wave
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from model import tokenizer as tok
from model.audio_encoder import AudioEncoderConfig, fbank, splice_frames
from model.layout import interleave_chunks
from model.omni import IGNORE
from model.vit import VisualInput, ViTConfig


@dataclass
class RenderedSample:
    key: str
    task_family: str
    input_ids: list[int]
    labels: list[int]
    visuals: list[VisualInput] = field(default_factory=list)
    audio_features: list[torch.Tensor] = field(default_factory=list)
    ctc_targets: list[list[int]] = field(default_factory=list)  # per audio clip: its transcript's ids ([] = none)

    def __len__(self) -> int:
        return len(self.input_ids)


def _frames(sample: dict) -> torch.Tensor | None:
    names = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
    if not names:
        return None
    frames = [np.asarray(Image.open(io.BytesIO(sample[n])).convert("RGB"), dtype=np.float32) / 255.0 for n in names]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]


def _audio_features(sample: dict, cfg: AudioEncoderConfig) -> torch.Tensor | None:
    if "wav" not in sample:
        return None
    with wave.open(io.BytesIO(sample["wav"])) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    return splice_frames(fbank(torch.from_numpy(pcm), cfg), cfg.splice)


def _pick_qa(meta: dict, seed: int) -> dict | None:
    qa = meta.get("labels", {}).get("qa") or []
    if not qa:
        return None
    index = int(hashlib.sha256(f"{seed}:{meta['key']}".encode()).hexdigest()[:8], 16) % len(qa)
    return qa[index]


@dataclass
class Prompt:
    """What a sample shows the model before its question: token ids with placeholders, and the media."""

    ids: list[int]
    visuals: list[VisualInput]
    audio_features: list[torch.Tensor]


def render_prompt(sample: dict, tokenizer: Tokenizer, vit: ViTConfig, audio: AudioEncoderConfig) -> Prompt:
    """The media part of a non-text sample: vision placeholders for an image, the 1-second interleaved
    audio/video stream for clips (see model.layout)."""
    meta = sample["json"]
    frames, features = _frames(sample), _audio_features(sample, audio)
    visuals = [VisualInput(frames if frames.shape[0] > 1 else frames[0])] if frames is not None else []
    per_pair = 0
    if frames is not None:
        per_pair = (frames.shape[2] // vit.patch_size) * (frames.shape[3] // vit.patch_size) // vit.merge
    if meta["modality"] == "image":
        ids = [tok.special_id(tokenizer, tok.VISION_START)] + [tok.special_id(tokenizer, tok.VISION_PAD)] * per_pair
        ids.append(tok.special_id(tokenizer, tok.VISION_END))
    else:
        layout = meta.get("layout") or []
        steps = 0 if features is None else features.shape[0]
        ids = interleave_chunks(tokenizer, layout, per_pair, steps).input_ids
    return Prompt(ids, visuals, [features] if features is not None else [])


def question_ids(tokenizer: Tokenizer, family: str, question: str) -> list[int]:
    """A spoken question (voice_qa) is already in the audio; other families ask it in text."""
    return tokenizer.encode(" " + question).ids if family != "voice_qa" else []


def answer_ids(tokenizer: Tokenizer, answer: str) -> list[int]:
    return tokenizer.encode(" " + str(answer)).ids + [tok.special_id(tokenizer, tok.EOS)]


def ctc_target_ids(tokenizer: Tokenizer, transcript: str) -> list[int]:
    """The audio encoder's CTC targets for a transcript: the text tokenizer's ids of its spoken words.

    Case and punctuation are not heard, so they are dropped. Tokenizer ids rather than characters: the
    encoder emits 12.5 steps per second and CTC needs at least one step per target (more between repeats);
    at the demo's speaking rates a transcript has about as many characters as its clip has steps, but only
    ~1 token per word (tests/model/test_audio_encoder_ctc.py measures both).
    """
    words = "".join(c if c.isalnum() or c == "'" else " " for c in transcript.lower()).split()
    return tokenizer.encode(" " + " ".join(words)).ids if words else []


def render_sample(sample: dict, tokenizer: Tokenizer, vit: ViTConfig, audio: AudioEncoderConfig,
                  seed: int = 0) -> RenderedSample | None:  # fmt: skip
    """None when the sample carries nothing its task family can train on (e.g. a QA clip without QA)."""
    meta = sample["json"] if isinstance(sample["json"], dict) else json.loads(sample["json"])
    sample = {**sample, "json": meta}
    family = meta.get("task_family") or meta.get("modality")
    if meta["modality"] == "text":
        eos = tok.special_id(tokenizer, tok.EOS)
        ids = [tok.special_id(tokenizer, tok.BOS)] + tokenizer.encode(sample["txt"].decode("utf-8")).ids + [eos]
        return RenderedSample(meta["key"], family, ids, ids[1:] + [IGNORE])
    labels_meta = meta.get("labels", {})
    if family in ("asr",) and labels_meta.get("transcript"):
        question, target = [], labels_meta["transcript"]
    elif family == "image_caption" and labels_meta.get("caption"):
        question, target = [], labels_meta["caption"]
    elif (qa := _pick_qa(meta, seed)) is not None:
        question, target = question_ids(tokenizer, family, qa["question"]), qa["answer"]
    else:
        return None
    prompt = render_prompt(sample, tokenizer, vit, audio)
    answer = answer_ids(tokenizer, target)
    ids = prompt.ids + question + answer
    labels = [IGNORE] * len(ids)
    start = len(prompt.ids) + len(question) - 1  # the position before each answer token predicts it
    for offset, token in enumerate(answer):
        labels[start + offset] = token
    transcript = labels_meta.get("transcript")
    ctc = [ctc_target_ids(tokenizer, transcript) if transcript else []] * len(prompt.audio_features)
    return RenderedSample(meta["key"], family, ids, labels, prompt.visuals, prompt.audio_features, ctc)
