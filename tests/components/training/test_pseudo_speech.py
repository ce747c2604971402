"""Pseudo-speech transcription samples: real clips' layouts filled with new words, read by the LLM exactly as
a clip its audio encoder recognised with certainty."""

import json

import pytest
import torch
import webdataset as wds

from components.demo_data.families import AV_QUESTIONS
from components.training.chat_template import instruction
from components.training.pseudo_speech import PSEUDO_ASR, PSEUDO_AV, pseudo_asr_samples, pseudo_av_samples
from components.training.render import render_samples
from model import tokenizer as tok
from model.audio_encoder import CTC_BLANK
from model.config import get_preset
from model.omni import IGNORE, OmniBatch, OmniModel

PRESET = get_preset("tiny")


@pytest.fixture(scope="module")
def rendered_clips(tiny_dataset):
    """The tokenizer, and each ingested sample of the tiny dataset with its rendered samples."""
    tokenizer = tok.load_tokenizer(tiny_dataset / "tokenizer.json")
    shards = sorted(str(p) for p in (tiny_dataset / "shards").glob("*.tar"))
    return tokenizer, [(raw, render_samples(raw, tokenizer, PRESET.vit, PRESET.audio_encoder))
                       for raw in wds.WebDataset(shards, shardshuffle=False)]  # fmt: skip


@pytest.fixture(scope="module")
def asr_clips(rendered_clips):
    tokenizer, clips = rendered_clips
    return tokenizer, [r for _, rendered in clips for r in rendered if r.task_family == "asr"]


def _slot_runs(ids: list[int], template: list[int], audio_pad: int) -> list[list[int]]:
    """The ids at each second's placeholders of `template`, second by second."""
    runs: list[list[int]] = []
    for position, token in enumerate(template):
        if token == audio_pad:
            if not runs or template[position - 1] != audio_pad:
                runs.append([])
            runs[-1].append(ids[position])
    return runs


def _built(fixture, build, family: str, count: int, seed: int):
    """(tokenizer, clips, the audio placeholder id, `count` samples that `build` made of the clips), checked
    to be `count` distinct keys of `family`."""
    tokenizer, clips = fixture
    samples = build(clips, tokenizer, count=count, seed=seed)
    assert len({s.key for s in samples}) == count and {s.task_family for s in samples} == {family}
    return tokenizer, clips, tok.special_id(tokenizer, tok.AUDIO_PAD), samples


@pytest.mark.slow
def test_pseudo_samples_spell_their_answer_in_a_real_clips_layout(asr_clips):
    tokenizer, clips, audio_pad, samples = _built(asr_clips, pseudo_asr_samples, PSEUDO_ASR, count=200, seed=3)
    answers = {tokenizer.decode([t for t in s.labels if t != IGNORE][:-1]) for s in samples}
    own = {tokenizer.decode(c.ctc_targets[0]) for c in clips}
    assert len(answers - own) >= 150  # new transcripts, not the clips' own (short ones may repeat)
    heard = {w for c in clips for w in tokenizer.decode(c.ctc_targets[0]).split()}
    for sample in samples:
        assert audio_pad not in sample.input_ids and not sample.audio_features and sample.text_loss == "audio_text"
        first = next(i for i, label in enumerate(sample.labels) if label != IGNORE)
        targets = sample.labels[first : len(sample.input_ids) - 1]
        assert sample.input_ids[first + 1 :] == targets and set(sample.labels[:first]) == {IGNORE}
        prompt = sample.input_ids[: first + 1]
        # the layout is a real clip's: its prompt with only the audio placeholders changed
        template = next(c.input_ids for c in clips if _same_but_placeholders(c.input_ids, prompt, audio_pad))
        runs = _slot_runs(prompt, template, audio_pad)
        for run in runs:  # recognised tokens first in each second, then blank
            spoken = [t for t in run if t != CTC_BLANK]
            assert run == spoken + [CTC_BLANK] * (len(run) - len(spoken))
        said = tokenizer.decode([t for run in runs for t in run if t != CTC_BLANK]).split()
        assert said == tokenizer.decode(targets[:-1]).split() and set(said) <= heard
    again = pseudo_asr_samples(clips, tokenizer, count=200, seed=3)
    assert [s.input_ids for s in again] == [s.input_ids for s in samples]
    other = pseudo_asr_samples(clips, tokenizer, count=200, seed=4)
    assert [s.input_ids for s in other] != [s.input_ids for s in samples]


def _same_but_placeholders(template: list[int], prompt: list[int], audio_pad: int) -> bool:
    head = template[: len(prompt)]
    return len(head) == len(prompt) and all(a == b or a == audio_pad for a, b in zip(head, prompt))


@pytest.mark.slow
def test_a_perfectly_recognised_clip_reads_as_its_pseudo_speech(asr_clips, single_process):
    """The claim the family rests on: where the CTC head is certain, the LLM's input at each placeholder is the
    embedding of the token it recognised (moved to the front of its second) or of the blank: the ids a
    pseudo-speech sample puts there."""
    tokenizer, clips = asr_clips
    audio_pad = tok.special_id(tokenizer, tok.AUDIO_PAD)
    clip = min((c for c in clips if c.input_ids.count(audio_pad) > 13), key=len)  # at least two seconds
    model = OmniModel(PRESET, tok.special_id(tokenizer, tok.VISION_PAD), audio_pad, audio_input="ctc_posteriors")
    encoder = model.audio_encoder
    steps = clip.audio_features[0].shape[0]
    words = tokenizer.encode(" red blue green").ids
    path = [CTC_BLANK] * steps
    path[1], path[2], path[5], path[14] = words[0], words[0], words[1], words[2]  # a run of two, then one each
    logits = torch.full((1, steps, PRESET.llm.vocab_size), -40.0)
    logits[0, torch.arange(steps), torch.tensor(path)] = 40.0
    encoder.ctc_logits = lambda hidden: logits
    batch = OmniBatch(torch.tensor([clip.input_ids]), torch.tensor([clip.labels]), audio_features=clip.audio_features)
    with torch.no_grad():
        heard = model._audio_features(batch)
    expected_ids = [CTC_BLANK] * steps
    expected_ids[0], expected_ids[1] = words[0], words[1]  # second 0 (steps 0-11): its two runs, in order
    expected_ids[12] = words[2]  # second 1 starts at step 12
    table = model.llm.embedding.word_embeddings.weight
    torch.testing.assert_close(heard, table[torch.tensor(expected_ids)])


@pytest.fixture(scope="module")
def av_clips(rendered_clips):
    """One rendered sample of each av_qa clip and the clip's labels, as stage_runner.load_samples hands them."""
    tokenizer, rendered = rendered_clips
    clips = [(samples[0], json.loads(raw["json"])["labels"]) for raw, samples in rendered
             if samples and samples[0].task_family == "av_qa"]  # fmt: skip
    assert {labels["variant"] for _, labels in clips} == {"beep", "word"}
    return tokenizer, clips


@pytest.mark.slow
def test_pseudo_av_answers_follow_the_sound_put_in_real_frames(av_clips):
    tokenizer, clips, audio_pad, samples = _built(av_clips, pseudo_av_samples, PSEUDO_AV, count=300, seed=5)
    answers_by_clip: dict[tuple[int, str], set[str]] = {}
    for sample in samples:
        template, labels = next((c, labels) for c, labels in clips if c.visuals is sample.visuals)  # the clip's frames
        assert audio_pad not in sample.input_ids and not sample.audio_features and sample.text_loss == "vision"
        first = next(i for i, label in enumerate(sample.labels) if label != IGNORE)
        answer = tokenizer.decode([t for t in sample.labels if t != IGNORE][:-1]).strip()
        media_end = template.input_ids.index(tok.special_id(tokenizer, tok.AUDIO_END)) + 1
        assert _same_but_placeholders(template.input_ids, sample.input_ids[:media_end], audio_pad)
        request = tokenizer.decode(sample.input_ids[media_end : first + 1]).strip()
        assert request.startswith(instruction("av_qa"))
        question = request.removeprefix(instruction("av_qa")).strip()
        runs = _slot_runs(sample.input_ids, template.input_ids, audio_pad)  # second by second
        for run in runs:
            spoken = [t for t in run if t != CTC_BLANK]
            assert run == spoken + [CTC_BLANK] * (len(run) - len(spoken))
        heard = [tokenizer.decode([t for t in run if t != CTC_BLANK]).strip() for run in runs]
        segments = labels["segments"]
        in_segment = [heard[int(s["start_s"])] for s in segments]  # a sound is put in its segment's first second
        assert sum(map(bool, heard)) == sum(map(bool, in_segment))
        if labels["variant"] == "beep":
            event = in_segment.index("beep")
            assert in_segment.count("beep") == 1 and set(in_segment) == {"beep", ""}
            assert question == AV_QUESTIONS["colour_at_beep"]
            expected = segments[event]["colour"]
        else:
            said = next(w for w in in_segment if question == AV_QUESTIONS["colour_at_word"].format(word=w))
            expected = segments[in_segment.index(said)]["colour"]
        assert answer == expected, (question, in_segment, answer)
        answers_by_clip.setdefault((id(template), question.split(" when ")[0]), set()).add(answer)
    # the same frames asked the same question get other answers as the sound moves: the frames alone cannot tell
    assert sum(len(answers) > 1 for answers in answers_by_clip.values()) >= len(answers_by_clip) // 2
    again = pseudo_av_samples(clips, tokenizer, count=300, seed=5)
    assert [s.input_ids for s in again] == [s.input_ids for s in samples]
