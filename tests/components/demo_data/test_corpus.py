import io
import json
import random
from collections import Counter

import numpy as np
import pytest
import webdataset as wds
import yaml
from PIL import Image

from components.demo_data import families as fam
from components.demo_data.corpus import FAMILIES, SIZES, draw_split, existing_corpus, in_partition
from components.ingest.discover import InputFile
from components.ingest.probe import probe_input
from components.specs.dataset import DatasetSpec, Modality
from tests.conftest import REPO_ROOT

SPEECH_FAMILIES = {"spoken_qa", "speech", "av_qa"}


def test_every_family_and_split_is_present_with_labels(tiny_corpus):
    summary = json.loads((tiny_corpus / "corpus.json").read_text())
    counts = Counter((i["family"], i["split"]) for i in summary["items"])
    for family, (train, eval_) in SIZES["tiny"].counts.items():
        long_clip = int(family == "video_qa")
        assert counts[(family, "train")] == train + long_clip and counts[(family, "eval")] == eval_
    for item in summary["items"]:
        media = tiny_corpus / item["file"]
        labels = json.loads(media.with_name(media.name.rsplit(".", 1)[0] + ".labels.json").read_text())
        assert labels["split"] == item["split"] and labels["task_family"]
        for qa in labels.get("qa", []):
            assert qa["type"] and qa["answer"] in qa["choices"]


def test_the_make_run_corpus_has_enough_items_to_learn_from():
    for family, (train, eval_) in SIZES["small"].counts.items():
        assert train >= 300 and eval_ >= 50, family


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_items_are_distinct_and_splits_disjoint_in_items_and_speakers(family):
    train, held_out = SIZES["small"].counts[family.name]
    train_params = draw_split(family, 0, "train", train)
    eval_params = draw_split(family, 0, "eval", held_out)
    assert len(set(train_params)) == train and len(set(eval_params)) == held_out  # distinct content
    assert not set(train_params) & set(eval_params)
    if family.unique_keys:  # look-alike clips would be dropped by ingestion's near-duplicate check
        assert len({p.partition_keys for p in train_params}) == train
    for split, drawn in (("train", train_params), ("eval", eval_params)):
        assert all(in_partition(k, split) for p in drawn for k in p.partition_keys)
    if family.name in SPEECH_FAMILIES:
        speakers = [{p.voice.speaker for p in drawn if getattr(p, "voice", None)} for drawn in
                    (train_params, eval_params)]  # fmt: skip
        assert speakers[0] and speakers[1] and not speakers[0] & speakers[1]
        assert len(speakers[1]) >= 5  # eval is not one unlucky voice


def test_the_assistant_speaks_unseen_sentences_in_one_voice_of_its_own():
    """Speech responses are said in one voice (the model's), the same in both splits; eval sentences are new."""
    family = next(f for f in FAMILIES if f.name == "assistant_speech")
    train, held_out = (draw_split(family, 0, split, 50) for split in ("train", "eval"))
    assert {p.voice for p in train + held_out} == {fam.ASSISTANT_VOICE}
    assert not {p.words for p in train} & {p.words for p in held_out}


def test_draws_are_deterministic_per_seed():
    family = FAMILIES[0]
    assert draw_split(family, 7, "train", 4) == draw_split(family, 7, "train", 4)
    assert draw_split(family, 7, "train", 4) != draw_split(family, 8, "train", 4)


def test_answers_follow_the_parameters_in_number_words():
    p = fam.SpokenQAParams(a=7, b=5, op="minus", voice=fam.Voice("en+m1", 50, 160), ext=".wav")
    assert p.answer == 2
    assert fam.fact_sentence(7, "minus", 5) == "seven minus five is two."
    params = fam.av_qa_params(random.Random(1), fam.SPEAKERS)
    if params.variant == "word":
        assert params.directions[params.event_segment] == "left"


@pytest.mark.parametrize("spec_file", ["demo.yaml", "demo_s3.yaml"])
def test_generator_design_agrees_with_the_demo_dataset_spec(spec_file):
    spec = DatasetSpec.model_validate(yaml.safe_load((REPO_ROOT / "data_specs/datasets" / spec_file).read_text()))
    assert spec.resize == fam.DEMO_RESIZE
    assert spec.frame_sampling.fps == spec.frame_sampling.max_fps == fam.DEMO_FPS
    assert spec.frame_sampling.max_frames == fam.MAX_FRAMES


def test_existing_corpus_is_reused_only_when_complete_and_same(tiny_corpus):
    assert existing_corpus(tiny_corpus, 3, "tiny") is not None
    assert existing_corpus(tiny_corpus, 4, "tiny") is None
    assert existing_corpus(tiny_corpus, 3, "small") is None


def test_videos_vary_in_length_container_and_audio(tiny_corpus):
    probes = [
        probe_input(InputFile("v", Modality.VIDEO, None, str(p), p.name))
        for p in sorted((tiny_corpus / "video_qa").rglob("*"))
        if p.is_file() and not p.name.endswith(".json")
    ]
    assert all(p.reason is None for p in probes)
    assert max(p.duration_s for p in probes) >= 299  # the 5-minute clip
    assert min(p.duration_s for p in probes) <= fam.MAX_CLIP_S
    av = [
        probe_input(InputFile("a", Modality.VIDEO, None, str(p), p.name))
        for p in sorted((tiny_corpus / "av_qa").rglob("*"))
        if p.is_file() and not p.name.endswith(".json")
    ]
    assert all(p.audio_codec for p in av), "audio-visual questions need both streams"


# ------------------------------------------------------------------ on the ingested tiny corpus
@pytest.fixture(scope="module")
def ingested_clips(tiny_dataset) -> list[dict]:
    """Ingested video samples that carry questions: their metadata and resized frames."""
    shards = sorted(str(p) for p in (tiny_dataset / "shards").glob("*.tar"))
    clips = []
    for sample in wds.WebDataset(shards, shardshuffle=False):
        meta = json.loads(sample["json"])
        if meta["modality"] == "video" and meta["labels"].get("qa"):
            frames = [np.asarray(Image.open(io.BytesIO(sample[k])).convert("RGB"), dtype=np.int16)
                      for k in sorted(k for k in sample if k.endswith(".jpg"))]  # fmt: skip
            clips.append(meta | {"frames": frames})
    assert {c["task_family"] for c in clips} == {"video_qa", "av_qa"}
    return clips


def test_every_second_of_a_question_clip_holds_a_frame_pair(ingested_clips):
    for clip in ingested_clips:
        assert clip["layout"], clip["key"]
        for chunk in clip["layout"]:
            pair_starts = [i for i in chunk["frames"] if i % 2 == 0 and i + 1 in chunk["frames"]]
            assert pair_starts, f"{clip['key']} second {chunk['second']}: frames {chunk['frames']}"


def _longest_run(mask: np.ndarray) -> int:
    best = 0
    for line in mask:
        run = 0
        for on in line:
            run = run + 1 if on else 0
            best = max(best, run)
    return best


def test_moving_squares_span_two_patches_after_the_resize(ingested_clips):
    patch = fam.DEMO_RESIZE.patch_size
    for clip in ingested_clips:
        frame = clip["frames"][len(clip["frames"]) // 2]
        background = frame[0, 0]  # squares never reach the corners
        mask = np.abs(frame - background).sum(-1) > 120
        # JPEG and bilinear resampling soften one pixel on each edge
        assert min(_longest_run(mask), _longest_run(mask.T)) >= 2 * patch - 2, clip["key"]
