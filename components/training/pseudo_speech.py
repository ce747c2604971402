"""Text-only pseudo-speech: transcription samples whose "speech" is what a perfect recogniser would feed the LLM.

With `speech_input: ctc_posteriors` the LLM reads each second of speech as the audio encoder's recognised
tokens, moved to the front of that second's placeholders, the rest blank (model.audio_encoder
`ctc_posteriors`). A perfect recogniser's rows are one-hot, so the LLM input for a clip it recognised
perfectly is the token ids themselves at those placeholders and the blank's id (`<|pad|>`) after them.
Transcribing is then copying the recognised tokens out in order, across the seconds.

At laptop scale the LLM does not learn that copy from the demo's ~300 transcribed clips: measured from
make run's stage 4 (tiny preset, one-hot recognised tokens), 600 steps of those clips alone took their training
loss to 0.11 while held-out WER stayed 0.89 (the transcripts were memorised), and learning the copy itself
took ~15-25 thousand distinct transcripts (a phase change after ~1000 steps of 16 fresh ones, lr 1e-3). Text
costs nothing to vary, so this family supplies them: each sample takes the layout of a real training clip
(its seconds and placeholders per second, so lengths and positions are the real ones) and fills it with new
words drawn from the training transcripts' vocabulary, spread over the clip's seconds in order. Its
targets are `audio_text` (text conditioned on speech), like ASR's.

    samples = pseudo_asr_samples(asr_samples, tokenizer, count=20000, seed=1234)
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer

from components.training.chat_template import answer_ids, request_ids
from components.training.losses import PSEUDO_ASR, PSEUDO_AV
from components.training.render import RenderedSample
from model import tokenizer as tok
from model.audio_encoder import CTC_BLANK
from model.omni import IGNORE

POOL_SIZE = 20000  # distinct transcripts a stage draws from (the copy needs ~15-25 thousand, see above)


def _seconds(input_ids: list[int], audio_pad: int) -> list[tuple[int, int]]:
    """(first position, count) of each run of audio placeholders: one run per second of the clip."""
    runs: list[tuple[int, int]] = []
    for position, token in enumerate(input_ids):
        if token != audio_pad:
            continue
        if runs and runs[-1][0] + runs[-1][1] == position:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((position, 1))
    return runs


def pseudo_asr_samples(asr: list[RenderedSample], tokenizer: Tokenizer, count: int = POOL_SIZE,
                       seed: int = 0) -> list[RenderedSample]:  # fmt: skip
    """`count` pseudo-speech transcription samples built on the layouts of the rendered ASR clips `asr`
    (with `speech_input: ctc_posteriors`: audio placeholders and CTC targets), keys `pseudo-asr-N`."""
    audio_pad = tok.special_id(tokenizer, tok.AUDIO_PAD)
    templates = [s for s in asr if s.ctc_targets and s.ctc_targets[0] and audio_pad in s.input_ids]
    if not templates:
        raise ValueError(f"the {PSEUDO_ASR} family is built on ASR clips read through the audio encoder "
                         "(speech_input: ctc_posteriors); the stage's datasets hold none in their train "
                         "split")  # fmt: skip
    spoken = [tokenizer.decode(s.ctc_targets[0]).split() for s in templates]  # each clip's recognisable words
    vocabulary = sorted({word for words in spoken for word in words})
    token_ids = {word: tokenizer.encode(" " + word).ids for word in vocabulary}
    rng = random.Random(f"{seed}:{PSEUDO_ASR}")
    samples = []
    while len(samples) < count:
        pick = rng.randrange(len(templates))
        template = templates[pick]
        seconds = _seconds(template.input_ids, audio_pad)
        words = rng.choices(vocabulary, k=len(spoken[pick]))
        # each word falls in a second, in order; a second holds no more tokens than it has placeholders
        where = sorted(rng.randrange(len(seconds)) for _ in words)
        filled = [[] for _ in seconds]
        for word, second in zip(words, where):
            filled[second] += token_ids[word]
        if any(len(ids) > n for ids, (_, n) in zip(filled, seconds)):
            continue
        ids = list(template.input_ids)
        for ids_in_second, (start, n) in zip(filled, seconds):
            ids[start : start + n] = ids_in_second + [CTC_BLANK] * (n - len(ids_in_second))
        prompt = ids[: _answer_start(template)]
        answer = answer_ids(tokenizer, " ".join(words))
        ids = prompt + answer
        labels = [IGNORE] * len(ids)
        labels[len(prompt) - 1 : len(ids) - 1] = answer
        samples.append(RenderedSample(f"pseudo-asr-{len(samples)}", PSEUDO_ASR, ids, labels, text_loss="audio_text"))
    return samples


def _answer_start(sample: RenderedSample) -> int:
    """Position of the first answer token: the first labelled position's successor."""
    return next(i for i, label in enumerate(sample.labels) if label != IGNORE) + 1


# ---------------------------------------------------------------- audio-visual clips, re-timed
PSEUDO_AV_POOL = 5000


def pseudo_av_samples(clips: list[tuple[RenderedSample, dict]], tokenizer: Tokenizer, count: int = PSEUDO_AV_POOL,
                      seed: int = 0) -> list[RenderedSample]:  # fmt: skip
    """`count` audio-visual questions on the frames of real av_qa training clips whose sound is re-timed, as
    one-hot recognised tokens (what pseudo_asr feeds, with `speech_input: ctc_posteriors`), keys `pseudo-av-N`.

    Why: the demo's ~300 av_qa clips each fix which segment beeps and which word goes with which square, so a
    model can answer them from the frames and its memory of the clip; measured, the score did not move when the
    audio alone was silenced (README, omni_av). Here the same frames come with the beep in another segment, or
    other words in each segment, and the answer follows the sound: only a model that finds the second the
    sound is in, and reads the picture there, fits them.

    Only the colour questions are asked: the others (which way the square moved at the beep, which word was
    said while it moved left) need motion, which the frozen ViT's features do not carry at this scale (a
    linear probe reads video_qa's direction at chance, data_specs/curriculum/tiny.yaml stage 3), so they would
    teach the answers' prior.

    `clips`: one rendered sample of each av_qa clip (its first question; with `speech_input: ctc_posteriors`)
    and the clip's labels (components.demo_data.families.render_av_qa: timed `segments` with each segment's
    colour, direction, and its word or beep). A recognised sound goes in the first second of its segment,
    where the CTC head emits it (measured on eval clips: every beep and most words there)."""
    from components.demo_data.families import AV_QUESTIONS  # the demo's question wording (no heavy imports)

    audio_pad = tok.special_id(tokenizer, tok.AUDIO_PAD)
    templates = []
    for sample, labels in clips:
        seconds = _seconds(sample.input_ids, audio_pad)
        segments = labels.get("segments") or []
        if not segments or any(int(s["start_s"]) >= len(seconds) for s in segments) or not sample.visuals:
            continue
        question = labels["qa"][int(sample.key.rsplit("/q", 1)[1])]["question"]
        prompt_end = _answer_start(sample) - len(request_ids(tokenizer, "av_qa", question))
        templates.append((sample, labels, seconds, prompt_end))
    if not templates:
        raise ValueError(f"the {PSEUDO_AV} family is built on av_qa clips with timed segments read through the "
                         "audio encoder (speech_input: ctc_posteriors); the stage's datasets hold none in their "
                         "train split")  # fmt: skip
    words = sorted({s["word"] for _, labels, _, _ in templates for s in labels["segments"] if "word" in s})
    heard_ids = {word: tokenizer.encode(" " + word).ids for word in [*words, "beep"]}
    rng = random.Random(f"{seed}:{PSEUDO_AV}")
    samples: list[RenderedSample] = []
    while len(samples) < count:
        template, labels, seconds, prompt_end = templates[rng.randrange(len(templates))]
        segments = labels["segments"]
        heard: list[str | None]
        if labels.get("variant") == "beep":
            heard = [None] * len(segments)
            event = rng.randrange(len(segments))
            heard[event] = "beep"
            question, answer = AV_QUESTIONS["colour_at_beep"], segments[event]["colour"]
        else:
            heard = rng.sample(words, len(segments))
            asked = rng.randrange(len(segments))
            question = AV_QUESTIONS["colour_at_word"].format(word=heard[asked])
            answer = segments[asked]["colour"]
        ids = list(template.input_ids[:prompt_end])
        for segment, sound in zip(segments, heard):
            start, n = seconds[int(segment["start_s"])]
            said = heard_ids[sound] if sound else []
            ids[start : start + n] = said + [CTC_BLANK] * (n - len(said))
        for start, n in seconds:  # seconds without a sound: blank
            if ids[start] == audio_pad:
                ids[start : start + n] = [CTC_BLANK] * n
        ids += request_ids(tokenizer, "av_qa", question)
        target = answer_ids(tokenizer, answer)
        labels_out = [IGNORE] * (len(ids) + len(target))
        labels_out[len(ids) - 1 : len(ids) + len(target) - 1] = target
        samples.append(RenderedSample(f"pseudo-av-{len(samples)}", PSEUDO_AV, ids + target, labels_out,
                                      visuals=template.visuals, text_loss="vision"))  # fmt: skip
    return samples
