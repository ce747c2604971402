"""Split assignment: labels win, groups (e.g. speakers) never straddle train and eval, draws are stable."""

from __future__ import annotations

import hashlib

import pytest

from components.ingest.discover import InputFile
from components.ingest.splits import assign_split, check_group_disjoint
from components.specs.dataset import DatasetSpec, Modality, SourceSpec, SplitSpec


def _spec(**split) -> DatasetSpec:
    return DatasetSpec(
        name="d", sources=[SourceSpec(name="s", path="x", modality=Modality.AUDIO)], split=SplitSpec(**split)
    )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sides_by_speaker(spec: DatasetSpec, num_speakers: int = 40, per_speaker: int = 5) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {}
    for s in range(num_speakers):
        for i in range(per_speaker):
            sides.setdefault(f"spk{s}", set()).add(assign_split(_sha(f"{s}/{i}"), {"speaker": f"spk{s}"}, spec))
    return sides


def test_a_group_field_keeps_every_speaker_on_one_side():
    spec = _spec(group_field="speaker", eval_fraction=0.25)
    sides = _sides_by_speaker(spec)
    assert all(len(s) == 1 for s in sides.values())
    num_eval = sum(s == {"eval"} for s in sides.values())
    assert 4 <= num_eval <= 18  # a quarter of 40 speakers, give or take the draw
    assert _sides_by_speaker(spec) == sides  # deterministic
    reseeded = _sides_by_speaker(_spec(group_field="speaker", eval_fraction=0.25, seed=7))
    assert all(len(s) == 1 for s in reseeded.values()) and reseeded != sides


def test_without_a_group_field_items_of_a_speaker_are_drawn_alone():
    sides = _sides_by_speaker(_spec(eval_fraction=0.5))
    assert any(len(s) == 2 for s in sides.values())


def test_a_split_label_wins_and_items_without_the_group_are_drawn_by_content():
    spec = _spec(group_field="speaker", eval_fraction=0.5)
    assert assign_split(_sha("x"), {"speaker": "a", "split": "eval"}, spec) == "eval"
    assert assign_split(_sha("x"), {"speaker": 12}, spec) == assign_split(_sha("y"), {"speaker": "12"}, spec)
    unlabelled = {assign_split(_sha(f"n{i}"), {}, spec) for i in range(40)}
    assert unlabelled == {"train", "eval"}


def test_seed_zero_keeps_the_content_draws_of_earlier_versions():
    spec = _spec(eval_fraction=0.3)
    for i in range(50):
        sha = _sha(str(i))
        before = int(hashlib.sha256(("split:" + sha).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < 0.3
        assert assign_split(sha, {}, spec) == ("eval" if before else "train")


def _item(url: str, **labels) -> InputFile:
    return InputFile("s", Modality.AUDIO, None, url, url, labels)


def test_labels_that_would_split_a_group_are_refused():
    spec = _spec(group_field="speaker", eval_fraction=0.5)
    drawn = assign_split(_sha("any"), {"speaker": "ana"}, spec)
    other = "train" if drawn == "eval" else "eval"
    check_group_disjoint([_item("a1", speaker="ana", split=other), _item("a2", speaker="ana", split=other)], spec)
    with pytest.raises(ValueError) as error:
        check_group_disjoint([_item("a1", speaker="ana", split=other), _item("a2", speaker="ana")], spec)
    message = str(error.value)
    assert (
        "speaker 'ana' would be on both sides (" in message and f"{other}: a1" in message and f"{drawn}: a2" in message
    )
    assert "give all its items the same 'split', or none" in message


def test_a_group_field_no_input_has_is_refused():
    with pytest.raises(ValueError, match="split.group_field is 'speakr', but no input has that label"):
        check_group_disjoint([_item("a", speaker="ana")], _spec(group_field="speakr"))
