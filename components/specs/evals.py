"""Eval-suite and gate specs: what `data_specs/evals/*.yaml` and `data_specs/gates/*.yaml` may say.

An eval suite mirrors one benchmark family of REFERENCE.md section 8 on held-out items (the dataset's
`eval` split, generated from parameter seeds disjoint from training):

    name: video_qa                # also the metric's name in MLflow (eval/video_qa)
    family: video_qa              # task family of the items
    metric: accuracy              # accuracy (multiple choice) | wer | perplexity
    chance: uniform               # a number; 'uniform' = mean of 1/len(choices) over the items;
                                  # 'blind_prior' (wer) = the best constant training transcript
    data: {dataset: demo, version: latest, split: eval}
    min_items: 50                 # fewer eval items: flagged, and the gate's min_items rule fails
    blanked_control: true         # also score the items with their media blanked (components.evaluation.blanking)
    modality_controls: [audio, video]   # audio-visual suites: also score with one modality blanked at a time

A gate says when a candidate may replace the `champion`:

    model_name: omnistage-omni-tiny
    suites: [text, image, ...]
    floors: {image: 0.3, text: 200}         # accuracy >= floor; wer / perplexity <= floor
    above_chance: all                       # or a list of suites: the 95% CI strictly better than chance
    above_blanked: all                      # suites with media: CI of (score - blanked) strictly better than 0
    above_modality_controls: all            # suites with modality_controls: better than each one-blanked control
    require_min_items: true                 # each suite scored at least its spec's min_items items
    no_regression: {tolerance: {default: 0.0, text: 5.0}}   # paired bootstrap vs the champion, same items
    require_approval: false
    streaming:                              # optional: held-out clips through the streaming server
      families: [av_qa, voice_qa]
      items_per_family: 2
      same_answers: true                    # streamed answer == offline greedy answer
      max_time_to_first_audio_ms: 2000
      max_real_time_factor: 1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.specs.loading import SpecError, load_yaml_model

EVALS_DIR = Path(__file__).resolve().parents[2] / "data_specs" / "evals"  # the shipped suites

METRICS = ("accuracy", "wer", "perplexity")
HIGHER_IS_BETTER = {"accuracy": True, "wer": False, "perplexity": False}
TEXT_ONLY_FAMILIES = frozenset({"text"})  # no media to blank: no media-blanked control
# Families whose items carry both audio and video: the ones a single-modality control can ask about.
AUDIO_VISUAL_FAMILIES = frozenset({"av_qa"})
MODALITIES = ("audio", "video")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvalData(_Strict):
    dataset: str
    version: str = Field("latest", description="DVC version (md5) of the dataset, or 'latest'")
    split: Literal["eval"] = "eval"


class EvalSuiteSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    family: Literal["text", "image_caption", "video_qa", "av_qa", "voice_qa", "asr", "assistant_speech"]
    metric: Literal["accuracy", "wer", "perplexity"]
    chance: float | Literal["uniform", "vocabulary", "blind_prior", "majority"]
    output: Literal["text", "speech"] = Field(
        "text", description="what the model produces: text, or speech as codec tokens (the assistant's voice "
        "saying unseen sentences; components/evaluation/speech_output.py, chance: majority)")
    data: EvalData
    choices: list[str] | None = Field(None, description="answer choices when the items carry none")
    classify: str | None = Field(None, description="label field whose value is swapped in the target text")
    max_items: int | None = Field(None, gt=0)
    min_items: int = Field(50, ge=1, description="fewer scored items than this fail the gate's min_items rule")
    choice_scoring: Literal["mean_logprob", "sum_logprob"] = Field(
        "mean_logprob", description="multiple choice: mean log-probability per answer token (length-normalised) "
        "or the sum (favours short answers; kept to compare with older evaluations)")
    blanked_control: bool = Field(True, description="also score the items with their media blanked")
    modality_controls: list[Literal["audio", "video"]] = Field(
        default_factory=list, description="audio-visual suites: also score the items with only this modality "
        "blanked (the other kept), so the report shows whether the model uses each stream, not just either")
    bootstrap_samples: int = Field(1000, ge=100)

    @model_validator(mode="after")
    def _consistent(self) -> EvalSuiteSpec:
        if self.chance == "uniform" and self.metric != "accuracy":
            raise ValueError("chance 'uniform' is for accuracy suites; give a number")
        if self.chance == "vocabulary" and self.metric != "perplexity":
            raise ValueError("chance 'vocabulary' (the perplexity of a uniform guess) is for perplexity suites")
        if self.chance == "blind_prior" and self.metric != "wer":
            raise ValueError("chance 'blind_prior' (the best constant training transcript) is for wer suites")
        if self.max_items is not None and self.max_items < self.min_items:
            raise ValueError(f"max_items {self.max_items} is below min_items {self.min_items}: every evaluation "
                             "would be flagged too small; raise max_items or lower min_items")
        if (self.chance == "majority") != (self.output == "speech"):
            raise ValueError("chance 'majority' (the best constant semantic code) goes with output: speech, and only")
        if (self.output == "speech") != (self.family == "assistant_speech") or (
                self.output == "speech" and self.metric != "accuracy"):
            raise ValueError("output: speech scores semantic-token accuracy on clips of the assistant's voice: family "
                             "assistant_speech, metric accuracy (and that family only with output: speech)")
        if self.classify and not self.choices:
            raise ValueError(f"classify: {self.classify} needs the list of choices")
        if self.modality_controls and self.family not in AUDIO_VISUAL_FAMILIES:
            raise ValueError(f"modality_controls {self.modality_controls}: family {self.family} does not carry both "
                             f"audio and video; it is for {sorted(AUDIO_VISUAL_FAMILIES)} (remove the field or use "
                             "blanked_control, which blanks every medium at once)")
        if len(set(self.modality_controls)) != len(self.modality_controls):
            raise ValueError(f"modality_controls {self.modality_controls} lists a modality twice")
        return self

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    @property
    def has_media(self) -> bool:
        return self.family not in TEXT_ONLY_FAMILIES

    @classmethod
    def load(cls, path: Path | str) -> EvalSuiteSpec:
        return load_yaml_model(path, cls)


class NoRegression(_Strict):
    """Fails a suite when the paired-bootstrap 95% CI of (candidate - champion) on the same items lies wholly
    on the worse side of -tolerance (in the metric's units)."""

    tolerance: dict[str, float] = Field(default_factory=lambda: {"default": 0.0})
    bootstrap_samples: int = Field(1000, ge=100)

    def for_suite(self, suite: str) -> float:
        return self.tolerance.get(suite, self.tolerance.get("default", 0.0))


STREAMED_FAMILIES = ("av_qa", "voice_qa", "video_qa", "asr")


class StreamingCheck(_Strict):
    """Held-out clips replayed through the streaming server before promotion (components.serving.check)."""

    dataset: str = Field("demo", description="dataset (a --dataset NAME) whose eval split holds the clips")
    families: list[Literal["av_qa", "voice_qa", "video_qa", "asr"]] = Field(
        default_factory=lambda: ["av_qa", "voice_qa"], min_length=1)
    items_per_family: int = Field(2, ge=1, le=50, description="clips per family, the first by key")
    same_answers: bool = Field(True, description="each streamed answer's text equals the offline greedy answer")
    max_time_to_first_audio_ms: float | None = Field(
        None, gt=0, description="every clip's time from end of turn to the first audio chunk (client side)")
    max_real_time_factor: float | None = Field(
        None, gt=0, description="every clip's compute time over the seconds it serves (components.serving.replay)")


class GateSpec(_Strict):
    name: str
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    suites: list[str] = Field(min_length=1)
    floors: dict[str, float] = Field(default_factory=dict)
    above_chance: list[str] | Literal["all"] = Field(
        default_factory=list, description="suites whose 95% CI must be strictly better than chance")
    above_blanked: list[str] | Literal["all"] = Field(
        default_factory=list, description="suites whose CI of (score - media-blanked score) must be better than 0; "
        "'all' = every suite that has media")
    above_modality_controls: list[str] | Literal["all"] = Field(
        default_factory=list, description="suites whose CI of (score - score with one modality blanked) must be "
        "better than 0 for each of their modality_controls: the model uses every stream; 'all' = every suite "
        "whose spec has modality_controls")
    require_min_items: bool = Field(True, description="fail a suite scored on fewer items than its min_items")
    no_regression: NoRegression | None = NoRegression()
    require_approval: bool = False
    streaming: StreamingCheck | None = Field(
        None, description="replay held-out clips through the streaming server; fail on other answers or latency")

    @model_validator(mode="after")
    def _floors_name_suites(self) -> GateSpec:
        unknown = sorted(set(self.floors) - set(self.suites))
        if unknown:
            raise ValueError(f"floors for suites the gate does not run: {unknown}; add them to suites")
        for rule in ("above_chance", "above_blanked", "above_modality_controls"):
            listed = getattr(self, rule)
            unknown = sorted(set(listed) - set(self.suites)) if listed != "all" else []
            if unknown:
                raise ValueError(f"{rule} names suites the gate does not run: {unknown}; add them to suites")
        if self.no_regression is not None:
            extra = sorted(set(self.no_regression.tolerance) - set(self.suites) - {"default"})
            if extra:
                raise ValueError(f"no_regression.tolerance names unknown suites: {extra}")
        return self

    def applies(self, rule: str, suite: str) -> bool:
        listed = getattr(self, rule)
        return listed == "all" or suite in listed

    @classmethod
    def load(cls, path: Path | str) -> GateSpec:
        return load_yaml_model(path, cls)


def load_suites(folder: Path, names: list[str] | None = None) -> list[EvalSuiteSpec]:
    """The suites in `folder` (data_specs/evals), all or the named ones, with a clear error for a typo."""
    available = {p.stem: p for p in sorted(Path(folder).glob("*.yaml"))}
    wanted = names or sorted(available)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise SpecError(f"{folder}: no eval suite(s) {missing}; available: {sorted(available)}")
    suites = [EvalSuiteSpec.load(available[n]) for n in wanted]
    for name, suite in zip(wanted, suites):
        if suite.name != name:
            raise SpecError(f"{available[name]}: field 'name' is '{suite.name}'; it must match the file name '{name}'")
    return suites
