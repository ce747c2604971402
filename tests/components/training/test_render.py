"""Rendering real ingested samples of every task family into model inputs, then through the tiny model."""

import json

import pytest
import torch
import webdataset as wds

from components.training.chat_template import INSTRUCTIONS
from components.training.render import heard_transcript, render_samples
from model import tokenizer as tok
from model.config import get_preset
from model.omni import IGNORE, OmniBatch, OmniModel

PRESET = get_preset("tiny")


@pytest.fixture(scope="module")
def rendered(tiny_dataset):
    out = tiny_dataset
    tokenizer = tok.load_tokenizer(out / "tokenizer.json")
    samples = wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False)
    return tokenizer, [r for s in samples for r in render_samples(s, tokenizer, PRESET.vit, PRESET.audio_encoder)]


@pytest.mark.slow
def test_every_family_renders_with_labels_on_the_target_only(rendered):
    tokenizer, samples = rendered
    families = {s.task_family for s in samples}
    assert families == {"text", "image_caption", "video_qa", "av_qa", "voice_qa", "asr"}
    vision_pad, audio_pad = tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD)
    for sample in samples:
        assert len(sample.input_ids) == len(sample.labels)
        targets = [t for t in sample.labels if t != IGNORE]
        assert targets and targets[-1] == tok.special_id(tokenizer, tok.EOS)
        assert sum(i == audio_pad for i in sample.input_ids) == sum(f.shape[0] for f in sample.audio_features)
        if sample.task_family in ("video_qa", "av_qa", "image_caption"):
            assert sample.visuals and any(i == vision_pad for i in sample.input_ids)
        if sample.task_family in ("av_qa", "voice_qa", "asr"):
            assert sample.audio_features


@pytest.mark.slow
def test_rendered_samples_run_through_the_tiny_omni_model(rendered, single_process):
    tokenizer, samples = rendered
    model = OmniModel(PRESET, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    for family in ("av_qa", "image_caption", "voice_qa"):
        sample = min((s for s in samples if s.task_family == family), key=len)
        batch = OmniBatch(torch.tensor([sample.input_ids]), torch.tensor([sample.labels]),
                          visuals=sample.visuals or None, audio_features=sample.audio_features or None)  # fmt: skip
        losses = model(batch)
        assert torch.isfinite(losses["text"]), family


@pytest.mark.slow
def test_every_question_of_a_clip_is_a_training_sample(tiny_dataset, rendered):
    _, samples = rendered
    keys = {s.key for s in samples}
    assert len(keys) == len(samples)
    shards = sorted(str(p) for p in (tiny_dataset / "shards").glob("*.tar"))
    asked = 0
    for raw in wds.WebDataset(shards, shardshuffle=False):
        meta = json.loads(raw["json"])
        for i, _ in enumerate(meta.get("labels", {}).get("qa") or []):
            assert f"{meta['key']}/q{i}" in keys
            asked += 1
    assert asked > 0 and asked == sum(s.task_family in ("video_qa", "av_qa", "voice_qa") for s in samples)


@pytest.mark.slow
def test_every_prompt_is_a_chat_turn_with_its_instruction(rendered):
    tokenizer, samples = rendered
    user, assistant = tok.special_id(tokenizer, tok.USER), tok.special_id(tokenizer, tok.ASSISTANT)
    for sample in samples:
        if sample.task_family == "text":
            continue
        ids = sample.input_ids
        assert ids[1] == user and ids.count(assistant) == 1, sample.key
        turn = ids.index(assistant)
        assert all(label == IGNORE for label in sample.labels[:turn])  # only the assistant turn is trained
        user_text = tokenizer.decode(ids[:turn], skip_special_tokens=True)
        assert INSTRUCTIONS[sample.task_family] in user_text, sample.key


@pytest.mark.slow
def test_av_clips_teach_the_audio_encoder_their_words_and_beeps(tiny_dataset, rendered):
    """CTC targets of av_qa clips: each segment's spoken word, or `beep` for the tone, in order; so from stage 5
    on, where speech reaches the LLM as CTC posteriors, the beep reaches it too."""
    tokenizer, samples = rendered
    shards = sorted(str(p) for p in (tiny_dataset / "shards").glob("*.tar"))
    metas = (json.loads(s["json"]) for s in wds.WebDataset(shards, shardshuffle=False))
    labels = {m["key"]: m["labels"] for m in metas}
    seen = set()
    for sample in (s for s in samples if s.task_family == "av_qa"):
        segments = labels[sample.key.split("/")[0]]["segments"]
        heard = [s.get("word", "beep") for s in segments if "word" in s or s["beep"]]
        assert tokenizer.decode(sample.ctc_targets[0]).split() == heard
        seen.add(labels[sample.key.split("/")[0]].get("variant"))
    assert seen == {"beep", "word"}


def test_heard_transcript_reads_av_segments_only_for_av_qa():
    segments = [{"word": "tiger"}, {"beep": False}, {"beep": True}, {"word": "river"}]
    assert heard_transcript("av_qa", {"segments": segments}) == "tiger beep river"
    assert heard_transcript("av_qa", {"segments": [{"beep": False}]}) is None  # a silent clip: nothing to learn
    assert heard_transcript("asr", {"transcript": "red rocket", "segments": segments}) == "red rocket"
    assert heard_transcript("voice_qa", {"segments": segments}) is None  # another dataset's word timestamps
