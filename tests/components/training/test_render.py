"""Rendering real ingested samples of every task family into model inputs, then through the tiny model."""

import pytest
import torch
import webdataset as wds

from components.training.render import render_sample
from model import tokenizer as tok
from model.config import get_preset
from model.omni import IGNORE, OmniBatch, OmniModel

PRESET = get_preset("tiny")


@pytest.fixture(scope="module")
def rendered(tiny_dataset):
    out = tiny_dataset
    tokenizer = tok.load_tokenizer(out / "tokenizer.json")
    samples = wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False)
    results = [render_sample(s, tokenizer, PRESET.vit, PRESET.audio_encoder) for s in samples]
    return tokenizer, [r for r in results if r is not None]


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
