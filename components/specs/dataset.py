"""The dataset spec: what `data_specs/datasets/*.yaml` may say.

A dataset is a list of sources (local paths or globs, or fsspec URLs), each with the modality it holds and
where its labels live, plus the policies ingestion applies to all of them: frame sampling, resizing, media
limits, shard size, split rule and the Great Expectations suite.

    spec = DatasetSpec.load("data_specs/datasets/demo.yaml")
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.specs.loading import load_yaml_model


class Modality(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE = "image"
    TEXT = "text"
    AUTO = "auto"  # decided per file from its probe (used by the ad-hoc `ingest --input` form)


class LabelSource(StrEnum):
    NONE = "none"
    SIDECAR = "sidecar"  # `<stem>.labels.json` next to each media file
    MANIFEST = "manifest"  # the source's manifest table (the default, and only choice, with `manifest`)


SIDECAR_SUFFIX = ".labels.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestFormat(StrEnum):
    CSV = "csv"
    TSV = "tsv"  # tab-separated, no quoting (a quote is text), as speech corpora ship them
    JSONL = "jsonl"  # one JSON object per line
    PARQUET = "parquet"


MANIFEST_SUFFIXES = {
    ".csv": ManifestFormat.CSV,
    ".tsv": ManifestFormat.TSV,
    ".jsonl": ManifestFormat.JSONL,
    ".ndjson": ManifestFormat.JSONL,
    ".parquet": ManifestFormat.PARQUET,
}


class ManifestSpec(_Strict):
    """One table listing a source's media files and their labels, instead of a `.labels.json` per file.

    Each row becomes the labels a sidecar would hold: columns keep their names (or are renamed by
    `label_columns`), `question`/`answer`/`choices` become one entry of `qa`, and rows naming the same file
    add their questions to it.
    """

    path: str = Field(
        description="The manifest file (CSV, TSV, JSONL or Parquet): a local path, relative to where commands "
        "run like source paths, or an fsspec URL."
    )
    format: ManifestFormat | None = Field(
        None, description="csv, tsv, jsonl or parquet; unset: taken from the file suffix."
    )
    path_column: str = Field(
        "path",
        description="The column naming each media file: a path relative to the manifest's folder, an absolute "
        "path, or a URL.",
    )
    label_columns: dict[str, str] | None = Field(
        None,
        description="Label name -> manifest column, e.g. {transcript: sentence, speaker: client_id}; unset: "
        "every column but the path column, under its own name.",
    )

    @property
    def table_format(self) -> ManifestFormat:
        return self.format or MANIFEST_SUFFIXES[Path(self.path).suffix.lower()]

    @model_validator(mode="after")
    def _format_known(self) -> ManifestSpec:
        if self.format is None and Path(self.path).suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(
                f"cannot tell the format of {self.path!r} from its suffix: set format to one of "
                f"{[f.value for f in ManifestFormat]}"
            )
        return self


class SourceSpec(_Strict):
    name: str = Field(description="Short name of the source; appears in the manifest's `source` column.")
    path: str | None = Field(
        None,
        description="A directory, a glob (`**` allowed) or an fsspec URL such as s3://bucket/x/*.mp4 "
        "(or `manifest` instead).",
    )
    manifest: ManifestSpec | None = Field(
        None, description="A table that lists the source's files with their labels (instead of `path`)."
    )
    modality: Modality = Field(description="What every file of this source must contain.")
    labels: LabelSource = Field(
        LabelSource.SIDECAR,
        description="Where per-file labels live: sidecar or none for a `path` source; a `manifest` source's "
        "labels come from its manifest.",
    )
    task_family: str | None = Field(None, description="Task family tag carried into the samples (e.g. video_qa).")

    @property
    def location(self) -> str:
        """What the source reads: its path, or its manifest file."""
        return self.manifest.path if self.manifest else self.path

    @model_validator(mode="before")
    @classmethod
    def _manifest_labels_by_default(cls, data):
        if isinstance(data, dict) and data.get("manifest") is not None:
            data = {"labels": LabelSource.MANIFEST.value, **data}
        return data

    @model_validator(mode="after")
    def _path_or_manifest(self) -> SourceSpec:
        if (self.path is None) == (self.manifest is None):
            raise ValueError(f"source '{self.name}': give exactly one of `path` (files) or `manifest` (a table)")
        if (self.manifest is not None) != (self.labels is LabelSource.MANIFEST):
            raise ValueError(
                f"source '{self.name}': labels '{self.labels.value}' does not fit; a manifest source takes its labels "
                "from the manifest (leave `labels` out), a `path` source uses sidecar or none"
            )
        return self


class FrameSamplingSpec(_Strict):
    """Duration-conditioned frame sampling (REFERENCE.md section 5)."""

    fps: float = Field(2.0, gt=0, description="Default sampling rate.")
    min_frames: int = Field(16, ge=1, description="Short clips are sampled more densely to reach this many frames.")
    max_fps: float = Field(4.0, gt=0, description="Densification never exceeds this rate.")
    max_frames: int = Field(256, ge=2, description="Long clips are sampled uniformly under this cap.")
    skip_unreferenced_frames: bool = Field(
        True,
        description="H.264/HEVC sources at >= 4x the sampling rate: leave undecoded the frames no other frame "
        "refers to (about half the decode CPU). A sampled frame may then come from a frame up to ~2 source "
        "frames from its target time (the sample's frame_source_times say which). false decodes every frame.",
    )

    @model_validator(mode="after")
    def _rates_ordered(self) -> FrameSamplingSpec:
        if self.max_fps < self.fps:
            raise ValueError(f"max_fps ({self.max_fps}) must be >= fps ({self.fps})")
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) must be <= max_frames ({self.max_frames})")
        return self


class ResizeSpec(_Strict):
    """Native-resolution rule of the ViT (REFERENCE.md section 3)."""

    patch_size: int = Field(14, ge=1)
    min_patches: int = Field(576, ge=1, description="Below this patch count the frame is scaled up.")
    max_patches: int = Field(5832, ge=1, description="Above this patch count the frame is scaled down.")

    @model_validator(mode="after")
    def _range_ordered(self) -> ResizeSpec:
        if self.min_patches > self.max_patches:
            raise ValueError(f"min_patches ({self.min_patches}) must be <= max_patches ({self.max_patches})")
        return self


class AudioSpec(_Strict):
    sample_rate: int = Field(16000, description="Audio is resampled to this rate, mono.")
    chunk_seconds: float = Field(1.0, gt=0, description="Length of one interleaved audio/video chunk.")


class LimitsSpec(_Strict):
    """Bounds outside which an input is quarantined as absurd (checked by the expectation suite)."""

    min_duration_s: float = Field(0.05, ge=0)
    max_duration_s: float = Field(3600.0, gt=0)
    min_side_px: int = Field(16, ge=1)
    max_side_px: int = Field(8192, ge=1)
    max_file_bytes: int = Field(8 * 1024**3, ge=1)
    # Frames are re-encoded to JPEG and audio to 16 kHz WAV, so by default the source codec does not matter:
    # whatever ffmpeg decodes is accepted. A list is an opt-in allow-list, enforced by the expectation suite.
    video_codecs: list[str] | None = Field(
        None,
        min_length=1,
        description="ffprobe codec names allowed for video (e.g. [h264, vp9]); unset: any decodable codec.",
    )
    audio_codecs: list[str] | None = Field(
        None,
        min_length=1,
        description="ffprobe codec names allowed for audio (e.g. [aac, opus]); unset: any decodable codec.",
    )
    image_codecs: list[str] | None = Field(
        None,
        min_length=1,
        description="ffprobe codec names allowed for images (e.g. [png, mjpeg]); unset: any decodable codec.",
    )
    min_sample_rate: int = Field(8000, ge=1)
    max_sample_rate: int = Field(192000, ge=1)


class NearDuplicateSpec(_Strict):
    """Catch re-encoded, resized or trimmed copies of a clip or image (components/ingest/near_duplicates.py).

    A copy goes to duplicates.jsonl (`kind: near`) with its original, and stays out of the shards.
    """

    enabled: bool = Field(True, description="Fingerprint every video, audio and image input and drop near copies.")
    max_hamming: int = Field(
        10, ge=0, le=32, description="Most pHash bits (of 64) in which two frames may differ and still match."
    )
    max_colour_difference: int = Field(
        24,
        ge=0,
        le=255,
        description="Largest difference of a cell's mean R, G or B (4x4 cells, 0-255) for two frames to match.",
    )
    min_matching_fraction: float = Field(
        0.8, gt=0, le=1, description="Share of the aligned frames that must match for two videos to match."
    )
    min_overlap_s: float = Field(
        2.0,
        gt=0,
        description="Aligned overlap two clips must share; a shorter clip needs 80% of its fingerprinted length.",
    )
    max_audio_bit_error_rate: float = Field(
        0.25,
        gt=0,
        lt=0.5,
        description="Share of audio fingerprint bits that may differ in any half second of the overlap "
        "(copies: 0.05-0.2; unrelated sounds: about 0.5).",
    )


class SplitSpec(_Strict):
    """How samples are assigned to splits: a label wins; otherwise a hash decides, of the item's group when
    `group_field` names one (so a speaker is never on both sides), else of the content."""

    label_field: str = Field("split", description="Label (sidecar key or manifest column) that names the split.")
    eval_fraction: float = Field(
        0.1, ge=0, le=1, description="Hash-based share of eval: of groups with `group_field`, else of files."
    )
    group_field: str | None = Field(
        None,
        description="Label that groups items, e.g. speaker: every item of a group gets the group's hash draw, "
        "so the train/eval split is group-disjoint. Items without it are drawn by their content.",
    )
    seed: int = Field(0, ge=0, description="Another seed draws another (still deterministic) partition.")
    allowed: list[str] = Field(default_factory=lambda: ["train", "eval"])


class DatasetSpec(_Strict):
    name: str
    description: str = ""
    sources: list[SourceSpec] = Field(min_length=1)
    frame_sampling: FrameSamplingSpec = FrameSamplingSpec()
    resize: ResizeSpec = ResizeSpec()
    audio: AudioSpec = AudioSpec()
    limits: LimitsSpec = LimitsSpec()
    split: SplitSpec = SplitSpec()
    near_duplicates: NearDuplicateSpec = NearDuplicateSpec()
    shard_max_bytes: int = Field(256 * 1024**2, ge=1024, description="Target size of one WebDataset shard.")
    expectation_suite: str = Field(
        "media_manifest", description="Name of a suite in data_specs/expectations/ (without .yaml)."
    )
    jpeg_quality: int = Field(90, ge=1, le=100)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("use letters, digits, '-' and '_' only (it names folders and DVC stages)")
        return value

    @model_validator(mode="after")
    def _unique_source_names(self) -> DatasetSpec:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        return self

    @classmethod
    def load(cls, path: Path | str) -> DatasetSpec:
        """Relative source paths are relative to where commands run (the repository root), like DVC's."""
        return load_yaml_model(path, cls)

    @classmethod
    def adhoc(cls, input_path: str, name: str = "adhoc") -> DatasetSpec:
        """The default policy for `omnistage ingest --input DIR_OR_GLOB`: one auto-modality source."""
        return cls(name=name, sources=[SourceSpec(name="input", path=input_path, modality=Modality.AUTO)])
