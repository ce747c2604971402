import json
import random
from collections import Counter

import pytest

from components.demo_data import families as fam
from components.demo_data.corpus import FAMILIES, SIZES, _draw, existing_corpus, in_partition
from components.ingest.discover import InputFile
from components.ingest.probe import probe_input
from components.specs.dataset import Modality


def test_every_family_and_split_is_present_with_labels(tiny_corpus):
    summary = json.loads((tiny_corpus / "corpus.json").read_text())
    counts = Counter((i["family"], i["split"]) for i in summary["items"])
    for family, (train, eval_) in SIZES["tiny"].items():
        assert counts[(family, "train")] == train and counts[(family, "eval")] == eval_
    for item in summary["items"]:
        media = tiny_corpus / item["file"]
        labels = json.loads(media.with_name(media.name.rsplit(".", 1)[0] + ".labels.json").read_text())
        assert labels["split"] == item["split"] and labels["task_family"]


def test_videos_vary_in_length_container_and_audio(tiny_corpus):
    probes = [
        probe_input(InputFile("v", Modality.VIDEO, None, str(p), p.name))
        for p in sorted((tiny_corpus / "video_qa").rglob("*"))
        if p.is_file() and not p.name.endswith(".json")
    ]
    assert all(p.reason is None for p in probes)
    assert max(p.duration_s for p in probes) >= 299  # the 5-minute clip
    assert min(p.duration_s for p in probes) <= 30
    av = [
        probe_input(InputFile("a", Modality.VIDEO, None, str(p), p.name))
        for p in sorted((tiny_corpus / "av_qa").rglob("*"))
        if p.is_file() and not p.name.endswith(".json")
    ]
    assert all(p.audio_codec for p in av), "audio-visual questions need both streams"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_train_and_eval_parameters_are_disjoint(family):
    train = {_draw(family, 0, "train", i).partition_key for i in range(40)}
    evals = {_draw(family, 0, "eval", i).partition_key for i in range(15)}
    assert not train & evals
    assert all(in_partition(k, "eval") for k in evals)


def test_draws_are_deterministic_per_seed():
    family = FAMILIES[0]
    assert _draw(family, 7, "train", 3) == _draw(family, 7, "train", 3)
    assert _draw(family, 7, "train", 3) != _draw(family, 8, "train", 3)


def test_answers_follow_the_parameters():
    p = fam.SpokenQAParams(a=7, b=5, op="minus", voice="en", speed=160, ext=".wav")
    assert p.answer == 2
    params = fam.av_qa_params(random.Random(1))
    if params.variant == "word":
        assert params.directions[params.event_segment] == "left"


def test_existing_corpus_is_reused_only_when_complete_and_same(tiny_corpus):
    assert existing_corpus(tiny_corpus, 3, "tiny") is not None
    assert existing_corpus(tiny_corpus, 4, "tiny") is None
    assert existing_corpus(tiny_corpus, 3, "small") is None
