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

from components.training.chat_template import answer_ids
from components.training.losses import PSEUDO_ASR
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
