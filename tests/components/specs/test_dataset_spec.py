import re
from pathlib import Path

import pytest

from components.ingest.validate import load_suite
from components.specs.dataset import DatasetSpec
from components.specs.loading import SpecError

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((REPO / "data_specs" / "datasets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_dataset_spec_loads(path):
    spec = DatasetSpec.load(path)
    assert spec.sources
    load_suite(spec.expectation_suite)  # the suite it names exists and parses


def test_wrong_spec_names_file_field_and_allowed_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: demo\n"
        "sources:\n"
        "  - {name: a, path: x, modality: smell}\n"
        "frame_sampling: {fps: -1}\n"
        "shard_max_bytes: 10\n"
    )
    with pytest.raises(SpecError) as err:
        DatasetSpec.load(bad)
    message = str(err.value)
    assert str(bad) in message
    assert "sources.0.modality" in message and "'video', 'audio', 'image', 'text' or 'auto'" in message
    assert "frame_sampling.fps" in message
    assert "shard_max_bytes" in message


def test_unknown_field_is_rejected(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("name: demo\nsources: [{name: a, path: x, modality: video}]\nshard_size: 5\n")
    with pytest.raises(SpecError, match="shard_size"):
        DatasetSpec.load(bad)


def test_duplicate_source_names_and_bad_dataset_name(tmp_path):
    dupe = tmp_path / "dupe.yaml"
    dupe.write_text("name: d\nsources: [{name: a, path: x, modality: video}, {name: a, path: y, modality: audio}]\n")
    with pytest.raises(SpecError, match=r"repeated: \['a'\]"):
        DatasetSpec.load(dupe)
    spaced = tmp_path / "spaced.yaml"
    spaced.write_text("name: 'my data'\nsources: [{name: a, path: x, modality: video}]\n")
    with pytest.raises(SpecError, match="letters, digits"):
        DatasetSpec.load(spaced)


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        DatasetSpec.load(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        DatasetSpec.load(tmp_path / "list.yaml")


def test_codec_allow_lists_are_opt_in(tmp_path):
    limits = DatasetSpec.adhoc("x").limits
    assert (limits.video_codecs, limits.audio_codecs, limits.image_codecs) == (None, None, None)
    opted_in = tmp_path / "codecs.yaml"
    opted_in.write_text("name: d\nsources: [{name: a, path: x, modality: video}]\nlimits: {video_codecs: [h264]}\n")
    assert DatasetSpec.load(opted_in).limits.video_codecs == ["h264"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: d\nsources: [{name: a, path: x, modality: video}]\nlimits: {audio_codecs: []}\n")
    with pytest.raises(SpecError, match="limits.audio_codecs"):
        DatasetSpec.load(empty)


def test_a_manifest_source_loads_and_wrong_combinations_are_named(tmp_path):
    good = tmp_path / "speech.yaml"
    good.write_text(
        "name: speech\n"
        "sources:\n"
        "  - name: cv\n"
        "    modality: audio\n"
        "    manifest: {path: raw/cv/validated.tsv, label_columns: {transcript: sentence, speaker: client_id}}\n"
        "split: {group_field: speaker, eval_fraction: 0.2, seed: 3}\n"
    )
    spec = DatasetSpec.load(good)
    (source,) = spec.sources
    assert source.labels == "manifest" and source.manifest.table_format == "tsv"
    assert source.location == "raw/cv/validated.tsv" and source.manifest.path_column == "path"
    assert DatasetSpec.model_validate_json(spec.model_dump_json()) == spec  # what shard workers receive
    bad_sources = {
        "{name: a, modality: audio}": "give exactly one of `path` (files) or `manifest` (a table)",
        "{name: a, path: x, manifest: {path: m.csv}, modality: audio}": "give exactly one of `path`",
        "{name: a, manifest: {path: m.csv}, labels: sidecar, modality: audio}": "leave `labels` out",
        "{name: a, manifest: {path: m.txt}, modality: audio}": "cannot tell the format of 'm.txt'",
        "{name: a, manifest: {path: m.csv, columns: [a]}, modality: audio}": "sources.0.manifest.columns",
    }
    for source_yaml, message in bad_sources.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"name: d\nsources: [{source_yaml}]\n")
        with pytest.raises(SpecError, match=re.escape(message)):
            DatasetSpec.load(bad)
