"""Render one WebDataset sample (as `omnistage ingest` wrote it) into what the omni model consumes:
token ids with placeholders, labels (IGNORE except on what the task should produce), frames for the
ViT and spliced fbank features for the audio encoder.

Non-text samples follow the chat template of `components.training.chat_template`:
`<bos><user>` media, instruction (and question), `<assistant>` target `<eos>`.

| task family | media | user text | trained on |
|---|---|---|---|
| text | - (`<bos>` text `<eos>`) | - | every next token |
| image_caption | vision placeholders | "Describe the image." | the caption |
| video_qa, av_qa | 1-second interleaved stream | instruction + question | the answer |
| voice_qa | audio stream (spoken question) | "Answer the spoken question." | the answer |
| asr | audio stream | "Transcribe the speech." | the transcript |

A clip with several questions renders one sample per question (`KEY/qN`), all sharing the clip's media
tensors: every question is trained each time its clip is drawn, and each sample is exactly what
evaluation scores (media + one question), which a multi-turn sample with earlier answers would not be.

Each sample's text targets belong to one loss class (model.omni.TEXT_LOSS_CLASSES, `text_loss`):
`text` for text-only samples, `vision` when the sample shows an image or video (image_caption,
video_qa, av_qa), `audio_text` when it carries speech but no picture (asr, voice_qa). Speech input is
either spliced fbank for the audio encoder (`audio_features`, from stage 5 on) or, when a `SpeechCoder`
is given (stages 1-4, REFERENCE.md section 4), codec tokens at `<|speech|>` positions of the same
1-second layout (`audio_codes`). Speech *output* samples are built in components.training.speech_render.
Speech with a transcript (asr, voice_qa) also carries the audio encoder's CTC targets (`ctc_target_ids`),
and so do av_qa clips: their words and beeps in order (`heard_transcript`).
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from components.training.chat_template import FIXED_REQUEST, answer_ids, request_ids, user_turn_start
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
    text_loss: str = "text"  # the loss class of its text targets (model.omni.TEXT_LOSS_CLASSES)
    audio_codes: torch.Tensor | None = None  # [len, 4] codec codes at its positions, -1 = none
    audio_labels: torch.Tensor | None = None  # [len, 4] next-step code targets, IGNORE = none
    first_audio: int | None = None  # position whose semantic target opens its speech response
    ctc_targets: list[list[int]] = field(default_factory=list)  # per audio clip: its transcript's ids ([] = none)

    def __len__(self) -> int:
        return len(self.input_ids)


def _frames(sample: dict) -> torch.Tensor | None:
    names = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
    if not names:
        return None
    frames = [np.asarray(Image.open(io.BytesIO(sample[n])).convert("RGB"), dtype=np.float32) / 255.0 for n in names]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W]


@dataclass(frozen=True)
class SpeechCoder:
    """Speech as codec tokens: `encode` maps a 16 kHz waveform to codes [frames, books] at `frame_rate` Hz
    (model.codec.AudioCodec.encode, 16.67 Hz)."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    frame_rate: float


def task_family(meta: dict) -> str | None:
    """The family an ingested sample trains (a mixture key): its `task_family` label, else its modality."""
    return meta.get("task_family") or meta.get("modality")


def waveform(sample: dict, sample_rate: int) -> torch.Tensor | None:
    """The sample's mono 16-bit audio as float samples; None without audio."""
    if "wav" not in sample:
        return None
    with wave.open(io.BytesIO(sample["wav"])) as w:
        if w.getframerate() != sample_rate:
            raise ValueError(f"sample {sample['json'].get('key')}: audio at {w.getframerate()} Hz, the models take "
                             f"{sample_rate} Hz; re-ingest with the dataset spec's audio.sample_rate = {sample_rate}")
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    return torch.from_numpy(pcm)


def _audio_features(sample: dict, cfg: AudioEncoderConfig) -> torch.Tensor | None:
    pcm = waveform(sample, cfg.sample_rate)
    return None if pcm is None else splice_frames(fbank(pcm, cfg), cfg.splice)


@dataclass
class Prompt:
    """What a sample shows the model before its question: token ids with placeholders, and the media."""

    ids: list[int]
    visuals: list[VisualInput]
    audio_features: list[torch.Tensor]
    audio_codes: torch.Tensor | None = None  # [len(ids), 4] speech input as codec codes, -1 = none


def render_prompt(sample: dict, tokenizer: Tokenizer, vit: ViTConfig, audio: AudioEncoderConfig,
                  speech_coder: SpeechCoder | None = None) -> Prompt:  # fmt: skip
    """The user turn up to the media's end: vision placeholders for an image, the 1-second interleaved
    audio/video stream for clips (see model.layout), with `speech_coder` its audio as codec tokens.
    Families with a fixed request (asr, image_caption) get it here, so the prompt ends at `<assistant>`;
    QA families continue with `question_ids`."""
    meta = sample["json"]
    frames, features, codes = _frames(sample), None, None
    if speech_coder is not None and "wav" in sample:
        with torch.no_grad():
            codes = speech_coder.encode(waveform(sample, audio.sample_rate))
    else:
        features = _audio_features(sample, audio)
    visuals = [VisualInput(frames if frames.shape[0] > 1 else frames[0])] if frames is not None else []
    per_pair = 0
    if frames is not None:
        per_pair = (frames.shape[2] // vit.patch_size) * (frames.shape[3] // vit.patch_size) // vit.merge
    ids = user_turn_start(tokenizer)
    if meta["modality"] == "image":
        ids += [tok.special_id(tokenizer, tok.VISION_START)] + [tok.special_id(tokenizer, tok.VISION_PAD)] * per_pair
        ids.append(tok.special_id(tokenizer, tok.VISION_END))
    else:
        layout = meta.get("layout") or []
        if codes is None:
            steps = 0 if features is None else features.shape[0]
            ids += interleave_chunks(tokenizer, layout, per_pair, steps).input_ids
        else:  # one `<|speech|>` position per codec frame, carrying that frame's 4 codes
            ids += interleave_chunks(tokenizer, layout, per_pair, codes.shape[0], audio_rate_hz=speech_coder.frame_rate,
                                     audio_token=tok.SPEECH_OUT).input_ids  # fmt: skip
            at = torch.tensor(ids) == tok.special_id(tokenizer, tok.SPEECH_OUT)
            placed = torch.full((len(ids), codes.shape[1]), -1, dtype=torch.long)
            placed[at] = codes.long()
            codes = placed
    family = task_family(meta)
    if family in FIXED_REQUEST:
        ids += request_ids(tokenizer, family)
        if codes is not None:
            codes = torch.cat([codes, torch.full((len(ids) - codes.shape[0], codes.shape[1]), -1, dtype=torch.long)])
    return Prompt(ids, visuals, [features] if features is not None else [], codes)


def question_ids(tokenizer: Tokenizer, family: str, question: str) -> list[int]:
    """The user turn after a QA family's media: its instruction, the question unless it is spoken, and
    `<assistant>`."""
    return request_ids(tokenizer, family, question)


def text_loss_class(prompt: Prompt) -> str:
    """The loss class of targets conditioned on this prompt (see the module docstring)."""
    if prompt.visuals:
        return "vision"
    return "audio_text" if prompt.audio_features or prompt.audio_codes is not None else "text"


def ctc_target_ids(tokenizer: Tokenizer, transcript: str) -> list[int]:
    """The audio encoder's CTC targets for a transcript: the text tokenizer's ids of its spoken words.

    Case and punctuation are not heard, so they are dropped. Tokenizer ids rather than characters: the
    encoder emits 12.5 steps per second and CTC needs at least one step per target (more between repeats);
    at the demo's speaking rates a transcript has about as many characters as its clip has steps, but only
    ~1 token per word (tests/model/test_audio_encoder_ctc.py measures both).
    """
    words = "".join(c if c.isalnum() or c == "'" else " " for c in transcript.lower()).split()
    return tokenizer.encode(" " + " ".join(words)).ids if words else []


def heard_transcript(family: str | None, labels: dict) -> str | None:
    """What a clip's audio says, as its CTC target: its transcript, or for an av_qa clip (timed segments)
    each segment's spoken word, or `beep` for its tone, in order. Only av_qa's segments are read: other
    datasets' word-timestamp segments are not this format and must not become CTC targets unasked.

    The sound event is transcribed so that a CTC stage with av_qa in its mixture teaches the head to name it:
    from stage 5 speech enters as the CTC head's posteriors (speech_input: ctc_posteriors), where a tone the
    head was never taught is blank. Measured in data_specs/curriculum/tiny.yaml (stage0b-audio-ctc)."""
    if labels.get("transcript") or family != "av_qa":
        return labels.get("transcript")
    heard = [s["word"] if "word" in s else "beep" for s in labels.get("segments", []) if "word" in s or s.get("beep")]
    return " ".join(heard) or None


def _rendered(key: str, family: str, prompt: Prompt, question: list[int], target: str,
              tokenizer: Tokenizer, transcript: str | None = None) -> RenderedSample:  # fmt: skip
    answer = answer_ids(tokenizer, target)
    ids = prompt.ids + question + answer
    labels = [IGNORE] * len(ids)
    start = len(prompt.ids) + len(question) - 1  # the position before each answer token predicts it
    for offset, token in enumerate(answer):
        labels[start + offset] = token
    codes = None
    if prompt.audio_codes is not None:
        codes = torch.full((len(ids), prompt.audio_codes.shape[1]), -1, dtype=torch.long)
        codes[: len(prompt.ids)] = prompt.audio_codes
    ctc = [ctc_target_ids(tokenizer, transcript) if transcript else []] * len(prompt.audio_features)
    return RenderedSample(key, family, ids, labels, prompt.visuals, prompt.audio_features,
                          text_loss_class(prompt), codes, ctc_targets=ctc)  # fmt: skip


def render_samples(sample: dict, tokenizer: Tokenizer, vit: ViTConfig, audio: AudioEncoderConfig,
                   speech_coder: SpeechCoder | None = None) -> list[RenderedSample]:  # fmt: skip
    """What one ingested sample trains: one rendered sample, or one per question of a QA clip (keys
    `KEY/qN`); empty when it carries nothing its task family can train on (e.g. a clip without QA)."""
    meta = sample["json"] if isinstance(sample["json"], dict) else json.loads(sample["json"])
    sample = {**sample, "json": meta}
    family = task_family(meta)
    if meta["modality"] == "text":
        eos = tok.special_id(tokenizer, tok.EOS)
        ids = [tok.special_id(tokenizer, tok.BOS)] + tokenizer.encode(sample["txt"].decode("utf-8")).ids + [eos]
        return [RenderedSample(meta["key"], family, ids, ids[1:] + [IGNORE])]
    labels_meta = meta.get("labels", {})
    if family in FIXED_REQUEST:
        target = labels_meta.get("transcript" if family == "asr" else "caption")
        if not target:
            return []
        prompt = render_prompt(sample, tokenizer, vit, audio, speech_coder)
        return [_rendered(meta["key"], family, prompt, [], target, tokenizer, heard_transcript(family, labels_meta))]
    questions = labels_meta.get("qa") or []
    if not questions:
        return []
    prompt = render_prompt(sample, tokenizer, vit, audio, speech_coder)  # media decoded once, shared by every question
    return [_rendered(f"{meta['key']}/q{i}", family, prompt, question_ids(tokenizer, family, qa["question"]),
                      qa["answer"], tokenizer, heard_transcript(family, labels_meta))
            for i, qa in enumerate(questions)]  # fmt: skip
