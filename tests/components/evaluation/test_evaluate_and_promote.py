"""Evaluation and promotion against a real MLflow registry (SQLite store) with a tracked tiny checkpoint:
scores with CIs, media-blanked controls and a report, identical numbers on a rerun, length-normalised choice
scores, the contamination check, promote / reject / approve / rollback aliases."""

import json
import shutil

import pandas as pd
import pytest

from components.evaluation.contamination import ContaminationError
from components.evaluation.evaluate import evaluate_model
from components.promotion.registry import approve, promote, registry_status, rollback
from components.specs.curriculum import CurriculumSpec
from components.specs.evals import GateSpec
from components.tracking.mlflow_stage import tracked_stage
from components.training.stage_runner import StageRun
from tests.conftest import REPO_ROOT, mlflow_db_copy

CURRICULUM = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
SUITES = ["text", "image", "video_qa", "omni_av", "voice_qa", "asr"]


def _train(dataset, out, uri):
    run = StageRun(CURRICULUM, "stage0-text", {"demo": dataset}, dataset / "tokenizer.json", out, max_steps=15)
    return tracked_stage(run, uri)[0].checkpoint


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory, migrated_mlflow_db):
    root = tmp_path_factory.mktemp("evaluate")
    uri = mlflow_db_copy(migrated_mlflow_db, root / "mlflow.db")
    return {"uri": uri, "checkpoint": _train(tiny_dataset, root / "s0", uri), "dataset": tiny_dataset, "root": root}


def _gate(**kw):
    # the tiny corpus holds a handful of eval items per suite: the min_items rule is tested in test_gate.py
    base = dict(name="test", model_name="omni-test", suites=["text", "image"], require_min_items=False)
    return GateSpec.model_validate(base | kw)


@pytest.mark.slow
def test_evaluate_scores_suites_with_cis_and_logs_a_report(trained):
    import mlflow

    result = evaluate_model(str(trained["checkpoint"]), {"demo": trained["dataset"]}, trained["uri"], SUITES)
    by_suite = {r.suite: r for r in result.results}
    assert sorted(by_suite) == sorted(SUITES)
    for r in result.results:
        assert r.ci_low <= r.value <= r.ci_high and r.num_items >= 1
    assert by_suite["image"].chance == pytest.approx(1 / 8)
    assert by_suite["text"].chance > 100  # the vocabulary size
    assert by_suite["text"].value < by_suite["text"].chance  # 15 text steps already beat a uniform guess
    assert by_suite["text"].blanked is None  # no media to blank
    for name in ("image", "video_qa", "omni_av", "voice_qa", "asr"):
        b = by_suite[name].blanked
        assert b is not None and b.ci_low <= b.value <= b.ci_high and len(by_suite[name].blanked_items) > 0
    assert 0 < by_suite["asr"].chance <= 1.0  # the best constant training transcript, at worst the empty one
    omni = by_suite["omni_av"]  # its spec asks for one-modality controls; no other suite's does
    assert set(omni.controls) == {"audio", "video"} and not by_suite["video_qa"].controls
    for control in omni.controls.values():
        assert control.ci_low <= control.value <= control.ci_high
        assert control.delta == pytest.approx(omni.value - control.value)
    assert all({"audio_blanked", "video_blanked"} <= set(row) for row in omni.breakdown.values())
    assert not by_suite["image"].enough_items  # the tiny corpus has a handful of eval items, fewer than 50
    client = mlflow.MlflowClient(trained["uri"])
    run = client.get_run(result.run_id)
    assert run.data.metrics["image.chance"] == pytest.approx(1 / 8) and "text.ci_high" in run.data.metrics
    assert "image.blanked.delta_ci_low" in run.data.metrics and run.data.metrics["image.min_items"] == 50
    assert {"omni_av.audio_blanked.delta_ci_low", "omni_av.video_blanked.value"} <= set(run.data.metrics)
    report = open(client.download_artifacts(result.run_id, "report/report.md", str(trained["root"]))).read()
    assert "| omni_av | audio |" in report and "| omni_av | video |" in report and "video blanked |" in report
    names = {a.path for a in client.list_artifacts(result.run_id, "report")}
    assert {"report/report.md", "report/suites.png", "report/confusion-image.png"} <= names


def _results_json(client, run_id, root):
    return json.loads(open(client.download_artifacts(run_id, "results.json", str(root))).read())


@pytest.mark.slow
def test_a_rerun_gives_identical_numbers(trained, tmp_path):
    import mlflow

    datasets, client = {"demo": trained["dataset"]}, mlflow.MlflowClient(trained["uri"])
    first = evaluate_model(str(trained["checkpoint"]), datasets, trained["uri"], SUITES)
    second = evaluate_model(str(trained["checkpoint"]), datasets, trained["uri"], SUITES)
    a, b = _results_json(client, first.run_id, tmp_path / "a"), _results_json(client, second.run_id, tmp_path / "b")
    assert a == b  # every suite's value, CI, chance, blanked control and every item's record, bit for bit
    assert client.get_run(first.run_id).data.metrics == client.get_run(second.run_id).data.metrics


@pytest.mark.slow
def test_choice_scores_are_the_mean_log_probability_per_answer_token(trained):
    """Each choice's score is its summed answer log-probability over its own token count (the captions
    differ in length: ' magenta' and ' red' are not the same number of tokens for every tokenizer), and
    scoring all choices as one padded batch gives what each choice scores alone."""
    from components.evaluation.items import load_eval_samples
    from components.evaluation.scoring import _choice_scores, _items_of, load_checkpoint_model
    from components.specs.evals import EVALS_DIR, load_suites
    from components.training.render import answer_ids, render_prompt

    loaded = load_checkpoint_model(trained["checkpoint"])
    spec = load_suites(EVALS_DIR, ["image"])[0]
    sample = load_eval_samples(spec, {"demo": trained["dataset"]})[0]
    prompt = render_prompt(sample, loaded.tokenizer, loaded.preset.vit, loaded.preset.audio_encoder)
    _, _, choices, _ = _items_of(sample, spec)[0]
    lengths = [len(answer_ids(loaded.tokenizer, c)) for c in choices]
    assert len(set(lengths)) > 1, lengths  # otherwise this test could not tell a mean from a sum
    means = _choice_scores(loaded, prompt, [], choices, mean=True)
    sums = _choice_scores(loaded, prompt, [], choices, mean=False)
    for choice, mean, total, count in zip(choices, means, sums, lengths):
        assert mean == pytest.approx(total / count, rel=1e-5)
        assert _choice_scores(loaded, prompt, [], [choice], mean=False)[0] == pytest.approx(total, abs=1e-3)


@pytest.mark.slow
def test_questions_about_one_clip_scored_together_score_as_alone(trained):
    """A clip's questions are scored as one batch (its media encoded once): every choice of every
    question scores what it scores when its question is asked alone."""
    from components.evaluation.items import load_eval_samples
    from components.evaluation.scoring import _choice_scores, _items_of, _question_scores, load_checkpoint_model
    from components.specs.evals import EVALS_DIR, load_suites
    from components.training.render import question_ids, render_prompt

    loaded = load_checkpoint_model(trained["checkpoint"])
    spec = load_suites(EVALS_DIR, ["video_qa"])[0]
    sample = load_eval_samples(spec, {"demo": trained["dataset"]})[0]
    prompt = render_prompt(sample, loaded.tokenizer, loaded.preset.vit, loaded.preset.audio_encoder)
    asked = [(question_ids(loaded.tokenizer, "video_qa", q), choices) for q, _, choices, _ in _items_of(sample, spec)]
    assert len(asked) == 3 and len({len(c) for _, c in asked}) > 1  # questions with different numbers of choices
    together = _question_scores(loaded, prompt, asked, mean=True)
    assert [len(scores) for scores in together] == [len(c) for _, c in asked]
    for (question, choices), scores in zip(asked, together):
        assert scores == pytest.approx(_choice_scores(loaded, prompt, question, choices, mean=True), abs=1e-5)


@pytest.mark.slow
def test_blanking_keeps_the_prompt_and_removes_the_content(trained):
    import torch

    from components.evaluation.blanking import blank_media
    from components.evaluation.items import load_eval_samples
    from components.specs.evals import EVALS_DIR, load_suites
    from components.training.render import render_prompt
    from model import tokenizer as tok
    from model.config import get_preset

    tokenizer = tok.load_tokenizer(trained["dataset"] / "tokenizer.json")
    preset = get_preset(CURRICULUM.preset)
    spec = load_suites(EVALS_DIR, ["omni_av"])[0]  # video frames and audio
    sample = load_eval_samples(spec, {"demo": trained["dataset"]})[0]
    shown = render_prompt(sample, tokenizer, preset.vit, preset.audio_encoder)
    blank = render_prompt(blank_media(sample), tokenizer, preset.vit, preset.audio_encoder)
    assert shown.ids == blank.ids  # same layout: same placeholders, same positions
    frames, grey = shown.visuals[0].pixels, blank.visuals[0].pixels
    assert frames.shape == grey.shape and frames.std() > 0.05 and grey.std() < 0.01
    audio, silent = shown.audio_features[0], blank.audio_features[0]
    assert audio.shape == silent.shape and audio.std() > 0.5 and torch.all(silent == silent.flatten()[0])
    # one modality at a time (omni_av's modality_controls): the other is left exactly as it was
    no_audio = render_prompt(blank_media(sample, {"audio"}), tokenizer, preset.vit, preset.audio_encoder)
    no_video = render_prompt(blank_media(sample, {"video"}), tokenizer, preset.vit, preset.audio_encoder)
    assert no_audio.ids == no_video.ids == shown.ids
    assert torch.equal(no_audio.visuals[0].pixels, frames) and torch.equal(no_audio.audio_features[0], silent)
    assert torch.equal(no_video.visuals[0].pixels, grey) and torch.equal(no_video.audio_features[0], audio)
    with pytest.raises(ValueError, match="unknown modalities"):
        blank_media(sample, {"vision"})


@pytest.mark.slow
def test_contamination_check_names_a_planted_overlap(trained):
    leaked = trained["root"] / "leaked"
    shutil.copytree(trained["dataset"], leaked)
    manifest = pd.read_parquet(leaked / "manifest.parquet")
    victim = manifest[(manifest.split == "eval") & (manifest.task_family == "image_caption")].index[0]
    manifest.loc[victim, "split"] = "train"  # the training data now claims an eval image
    manifest.to_parquet(leaked / "manifest.parquet")
    checkpoint = _train(leaked, trained["root"] / "leak-run", trained["uri"])
    with pytest.raises(ContaminationError) as caught:
        evaluate_model(str(checkpoint), {"demo": trained["dataset"]}, trained["uri"], ["image"])
    assert [o["sha256"] for o in caught.value.overlaps] == [manifest.loc[victim, "sha256"]]
    assert manifest.loc[victim, "path"] in str(caught.value)


@pytest.mark.slow
def test_promote_reject_approve_and_rollback_move_aliases(trained):
    uri, ckpt, datasets = trained["uri"], str(trained["checkpoint"]), {"demo": trained["dataset"]}
    first = promote(ckpt, _gate(floors={"text": 1e6}), datasets, uri)
    assert first["decision"]["status"] == "promoted" and first["champion"] == first["version"]
    assert [r["rule"] for r in first["decision"]["rules"]] == ["floor"]  # no champion: floors alone

    failing = promote(ckpt, _gate(floors={"image": 1.01}), datasets, uri)  # an impossible floor
    assert failing["decision"]["status"] == "rejected" and failing["champion"] == first["version"]
    status = registry_status("omni-test", uri)
    assert status["last_decision"]["status"] == "rejected" and status["last_decision"]["reasons"]
    assert status["aliases"]["challenger"] == failing["version"]

    gated = _gate(require_approval=True, no_regression={"tolerance": {"default": 1.0, "text": 1e6}})
    waiting = promote(ckpt, gated, datasets, uri)
    assert waiting["decision"]["status"] == "awaiting-approval" and waiting["champion"] == first["version"]
    approved = approve("omni-test", waiting["version"], "reviewer", gated, uri)
    assert approved["decision"]["status"] == "promoted" and approved["champion"] == waiting["version"]

    status = registry_status("omni-test", uri)
    assert status["champion"]["version"] == waiting["version"]
    assert status["aliases"]["previous-champion"] == first["version"]
    assert status["champion"]["data_version"] and status["champion"]["run_id"]
    image = status["champion"]["suites"]["image"]
    assert set(image) >= {"value", "ci_low", "ci_high", "chance", "blanked", "num_items", "higher_is_better"}
    assert image["blanked"]["ci_low"] <= image["blanked"]["value"] <= image["blanked"]["ci_high"]
    back = rollback("omni-test", uri)
    assert back["champion"] == first["version"] and back["demoted"] == waiting["version"]
    assert registry_status("omni-test", uri)["champion"]["version"] == first["version"]
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rollback("omni-test", uri)
    import mlflow

    client = mlflow.MlflowClient(uri)
    rejected = client.get_model_version("omni-test", failing["version"])
    assert rejected.tags["omnistage.rejected"] == "true"
    eval_run = rejected.tags["omnistage.eval_run"]
    path = client.download_artifacts(eval_run, f"gate/decision-v{failing['version']}.json", str(trained["root"]))
    decision = json.loads(open(path).read())
    failed = [(r["rule"], r["suite"]) for r in decision["rules"] if not r["passed"]]
    assert decision["status"] == "rejected" and failed == [("floor", "image")]


@pytest.mark.slow
def test_promote_re_evaluates_a_champion_scored_on_other_data_and_pairs_the_items(trained):
    import mlflow

    from components.evaluation.records import latest_evaluation_run

    uri, ckpt, datasets = trained["uri"], str(trained["checkpoint"]), {"demo": trained["dataset"]}
    gate = _gate(model_name="omni-pair", floors={"text": 1e6})
    first = promote(ckpt, gate, datasets, uri)
    assert first["decision"]["status"] == "promoted"
    client = mlflow.MlflowClient(uri)
    stale = latest_evaluation_run(client, "omni-pair", first["version"])
    client.set_tag(stale.info.run_id, "omnistage.data_versions", json.dumps({"demo": "an-older-version"}))
    second = promote(ckpt, gate, datasets, uri)
    fresh = latest_evaluation_run(client, "omni-pair", first["version"])
    assert fresh.info.run_id != stale.info.run_id  # the champion was scored again on the candidate's data
    rules = {r["suite"]: r for r in second["decision"]["rules"] if r["rule"] == "no_regression"}
    assert rules.keys() == {"text", "image"} and all(r["passed"] for r in rules.values())
    assert "paired items" in rules["image"]["detail"] and "+0 " in rules["image"]["detail"]  # same model: no change
