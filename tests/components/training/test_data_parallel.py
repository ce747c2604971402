"""Data-parallel stage training (2 gloo processes under torchrun) against one process on the same global batches.

The worker (dp_worker.py) runs `run_stage` on stage0-text with global_batch_size=2, micro_batch_size=1, on
the `text_dataset` fixture (tests/conftest.py), whose two rows of each global batch hold different texts.
A checkpoint saved at data parallel 2 resuming at one process on the next sample is
tests/components/training/test_model_parallel.py::test_saved_at_2_processes_resumes_at_1_on_the_next_sample[dp2]
(the same run_stage resume, on the multimodal stage, with the encoders' optimizer state too); a killed data
parallel stage0-text run resuming to where an uninterrupted run ends is test_rank_failure.py.
"""

import pytest
import torch

from components.specs.curriculum import CurriculumSpec
from components.training.data_parallel import plan_data_parallel, total_steps
from tests.components.training.torchrun import run_worker
from tests.conftest import REPO_ROOT, mlflow_db_copy

WORKER = REPO_ROOT / "tests" / "components" / "training" / "dp_worker.py"
STAGE = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml").stage("stage0-text")
# fp32 on both sides; the reduction adds the two ranks' gradients in the order one process accumulates
# its two micro-batches, so the match is exact in practice - the tolerance leaves room for a reordering.
GRAD_RTOL, GRAD_ATOL, LOSS_ATOL = 1e-5, 1e-7, 1e-5


def _worker(nproc: int, dataset, out, result, *args: str) -> list[dict]:
    return run_worker(WORKER, nproc, result, "--dataset", dataset, "--out", out, *args, timeout=240)


@pytest.fixture(scope="module")
def one_process(text_dataset, tmp_path_factory):
    """The single-process reference: 2 steps of 2 sequences."""
    tmp = tmp_path_factory.mktemp("dp1")
    return _worker(1, text_dataset, tmp / "out", tmp / "res", "--steps", "2", "--plain-reference")[0]


@pytest.fixture(scope="module")
def two_ranks(text_dataset, tmp_path_factory, migrated_mlflow_db):
    """2 steps at data parallel 2: (each rank's record, the MLflow tracking URI)."""
    tmp = tmp_path_factory.mktemp("dp2")
    uri = mlflow_db_copy(migrated_mlflow_db, tmp / "mlflow.db")
    return _worker(2, text_dataset, tmp / "out", tmp / "res", "--steps", "2", "--tracking-uri", uri), uri


@pytest.mark.slow
def test_two_data_parallel_ranks_match_one_process(one_process, two_ranks):
    ranks, _ = two_ranks
    for rank in ranks:
        assert rank["order"] == one_process["order"]  # the same global batches
        assert rank["losses"] == pytest.approx(one_process["losses"], abs=LOSS_ATOL)
    # rank r trained on sequence r of every global batch: together, the whole batch once, in order
    for step in range(2):
        assert ranks[0]["local_order"][step] + ranks[1]["local_order"][step] == one_process["order"][step]
        assert ranks[0]["local_order"][step] != ranks[1]["local_order"][step]  # else a rank on the wrong row passes
    reference = one_process["grads"]
    assert len(reference) > 50 and set(ranks[0]["grads"]) == set(reference)  # every trainable parameter
    for name, grad in one_process["plain_grads"].items():  # megatron's step = plain autograd on the global batch
        assert torch.allclose(reference[name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL), name
    for rank in ranks:
        for name, grad in reference.items():
            assert torch.allclose(rank["grads"][name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL), name
    assert ranks[0]["biases"] and all(torch.equal(a, b) for a, b in zip(ranks[0]["biases"], ranks[1]["biases"]))


def test_a_world_size_the_plan_does_not_divide_is_refused():
    stage = STAGE.model_copy(update={"parallel": STAGE.parallel.model_copy(update={"tensor": 2})})
    with pytest.raises(ValueError, match=r"stage 'stage0-text' started with 3 process\(es\).*does not divide"):
        plan_data_parallel(stage, world=3, rank=0)
    uneven = STAGE.model_copy(update={"global_batch_size": 3})
    with pytest.raises(ValueError, match=r"global_batch_size 3 is not a multiple of micro_batch_size 1 x data "):
        plan_data_parallel(uneven, world=2, rank=0)


def test_context_parallel_ranks_share_a_batch_and_replicas_follow_megatrons_rank_order():
    cp2 = STAGE.model_copy(update={"global_batch_size": 4,
                                   "parallel": STAGE.parallel.model_copy(update={"context": 2})})  # fmt: skip
    # tp-cp-dp order: ranks 0,1 are the CP ranks of replica 0 (the same sequences), ranks 2,3 of replica 1
    assert [plan_data_parallel(cp2, world=4, rank=r).dp_rank for r in range(4)] == [0, 0, 1, 1]
    odd = cp2.model_copy(update={"seq_length": 510})
    with pytest.raises(ValueError, match=r"seq_length 510 does not split over parallel.context 2: .*multiple of 2 x"):
        plan_data_parallel(odd, world=2, rank=0)
    tp2 = STAGE.model_copy(update={"global_batch_size": 4, "parallel": STAGE.parallel.model_copy(update={"tensor": 2})})
    # tensor-parallel ranks are adjacent: ranks 0,1 are replica 0 and ranks 2,3 replica 1, each with its own data
    assert [plan_data_parallel(tp2, world=4, rank=r).dp_rank for r in range(4)] == [0, 0, 1, 1]


def test_plan_slices_each_global_batch_and_token_budgets_become_steps():
    stage = STAGE.model_copy(update={"global_batch_size": 8, "micro_batch_size": 2})
    plans = [plan_data_parallel(stage, world=2, rank=r) for r in range(2)]
    assert plans[0].dp == 2 and plans[0].num_microbatches == 2
    assert plans[0].local_microbatches(list(range(8))) == [[0, 1], [4, 5]]
    assert plans[1].local_microbatches(list(range(8))) == [[2, 3], [6, 7]]
    budget = stage.budget.model_copy(update={"steps": None, "tokens": 8 * 256 * 5.5})
    tokens = stage.model_copy(update={"budget": budget})
    assert total_steps(tokens) == 5


@pytest.mark.slow
def test_only_rank_zero_tracks_and_its_metrics_are_global(one_process, two_ranks):
    import mlflow

    from components.tracking.experiments import CURRICULUM_EXPERIMENT

    _, uri = two_ranks
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(CURRICULUM_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # rank 1 never opened a run
    history = sorted(client.get_metric_history(runs[0].info.run_id, "loss"), key=lambda m: m.step)
    assert [m.value for m in history] == pytest.approx(one_process["losses"], abs=LOSS_ATOL)


def test_a_padded_micro_batch_sums_to_its_sequences_one_by_one(text_dataset, single_process):
    """micro_batch_size > 1: rows of different lengths padded into one batch give the same loss sums and counts."""
    from components.training.stage_runner import load_samples, make_microbatch
    from model import tokenizer as tok
    from model.config import get_preset
    from model.omni import OmniModel, loss_counts

    preset = get_preset("tiny")
    tokenizer = tok.load_tokenizer(text_dataset / "tokenizer.json")
    samples, _, _ = load_samples({"demo": text_dataset}, STAGE, tokenizer, preset, seed=1234)
    first, second = sorted(samples)[:2]
    rows = [[samples[first]], [samples[second], samples[first]]]  # the first row is shorter: padded
    torch.manual_seed(0)
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    together = make_microbatch(rows)
    assert together.input_ids.shape[0] == 2 and float(loss_counts(together)["text"]) == 3
    with torch.no_grad():
        joint = model(together, sums=True)["text"]
        apart = sum(model(make_microbatch([row]), sums=True)["text"] for row in rows)
    assert torch.allclose(joint, apart, rtol=1e-5)
