"""Data, tensor (+ sequence), expert, pipeline and context parallel stage training (2 gloo processes) against one
process. Context parallel (`cp2`) runs the local attention (keys/values all-gathered, document-mask rows).

In every layout (and in the one-process reference) run_stage trains the ViT and the audio encoder FSDP2-
sharded over the first pipeline stage's ranks, outside megatron's DDP, with their features passed through
the ModalityBridge (split between tensor-parallel ranks); so the comparison covers every encoder and
projector gradient, the joint gradient norm, and (resume tests) the encoders' AdamW state after DP=2 -> 1.

The worker (mp_worker.py) runs `run_stage` on the tiny curriculum's multimodal sft mixture with every module
trainable, global batch 2, micro batch 1, from one initial checkpoint written by the one-process reference
(so every layout starts from the same weights), then one extra `train_step` on a batch with audio codes and
targets (the stage's data has none yet). Gradients come back as checkpoints whose weights are gradients:
loading one into a one-process model reassembles the tensor/expert/pipeline shards by name.

Tolerance: fp32 throughout; tensor parallel splits matmuls and reductions (vocab-parallel softmax, row-
parallel sums), expert parallel reorders the combine, pipeline parallel changes nothing numerically. Measured
max relative gradient difference (largest |diff| of a tensor over its largest |grad|) ~5e-6: GRAD_RTOL 5e-5.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import pytest
import torch

from components.bench import parallel_scaling as bench
from components.training.parallel_compare import build_stage_model, load_gradients, worst_relative_diff
from tests.components.training.mp_worker import stage_curriculum
from tests.components.training.torchrun import run_worker
from tests.conftest import REPO_ROOT

WORKER = REPO_ROOT / "tests" / "components" / "training" / "mp_worker.py"
GRAD_RTOL, LOSS_ATOL = 5e-5, 1e-5
# Encoder weights after 4 steps, resumed vs uninterrupted (measured below); a resume without the encoders'
# AdamW state restarts their moments: measured 1e-1 (vit.patch_embed), vs 0 (bitwise equal) when restored.
WEIGHT_RTOL = 1e-5
LAYOUTS = {"dp2": [], "tp2-sp": ["--tp", "2"], "ep2": ["--ep", "2"], "pp2": ["--pp", "2"], "cp2": ["--cp", "2"]}
DATA_PARALLEL_2 = ("dp2", "ep2")  # each rank its half of every global batch
# How the compared stage (the tiny curriculum's sft) feeds speech to the LLM: through the audio encoder's
# projector, or as its CTC head's posteriors mixing the LLM's embeddings (model.omni.AUDIO_INPUTS).
AUDIO_INPUT = stage_curriculum(argparse.Namespace(tp=1, pp=1, ep=1, seq_length=512))[1].audio_input
AUDIO_WAY_IN = "audio_encoder.projector." if AUDIO_INPUT == "projector" else "audio_encoder.ctc_head."
# Parameters the stage cannot give a gradient: the codec (trained by its own stage) and the audio encoder's
# other way into the LLM (the CTC head then serves only its own ASR loss; the projector is bypassed).
NO_GRADIENT = ("codec.", "audio_encoder.ctc_head." if AUDIO_INPUT == "projector" else "audio_encoder.projector.")


def _full_gradients(folder: Path, dataset: Path) -> dict[str, torch.Tensor]:
    """A gradient checkpoint loaded into a one-process model: full gradients by parameter name."""
    curriculum, stage = stage_curriculum(argparse.Namespace(tp=1, pp=1, ep=1, seq_length=512))
    model = build_stage_model(curriculum, stage, dataset / "tokenizer.json")
    return load_gradients(folder, model, curriculum.preset)


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory, single_process):
    """One process: the initial checkpoint and 2 steps (what each layout's 2 steps are compared with), then 4
    uninterrupted steps from the same weights (what a resume at step 2 must end like)."""
    tmp = tmp_path_factory.mktemp("mp1")
    init = ["--dataset", tiny_dataset, "--init", tmp / "init"]
    first = run_worker(WORKER, 1, tmp / "res", *init, "--out", tmp / "out", "--save-init", "--steps", 2)[0]
    straight = run_worker(WORKER, 1, tmp / "straight", *init, "--out", tmp / "straight", "--steps", 4)[0]
    return {"init": tmp / "init", "first": first, "straight": straight, "straight_out": tmp / "straight",
            "grads": _full_gradients(tmp / "res.grads", tiny_dataset),
            "audio_grads": _full_gradients(tmp / "res.audio_grads", tiny_dataset)}  # fmt: skip


@pytest.fixture(scope="module")
def parallel_run(tiny_dataset, reference, tmp_path_factory):
    """layout -> (each rank's record, the run's folder): 2 steps on 2 processes, checkpoint at step 2."""
    runs = {}

    def run(layout: str):
        if layout not in runs:
            tmp = tmp_path_factory.mktemp(layout)
            ranks = run_worker(WORKER, 2, tmp / "res", "--dataset", tiny_dataset, "--out", tmp / "out", "--init",
                               reference["init"], "--steps", 2, "--checkpoint-every", 2, *LAYOUTS[layout])  # fmt: skip
            runs[layout] = ranks, tmp
        return runs[layout]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_matches_one_process(layout, parallel_run, reference, tiny_dataset):
    ranks, tmp = parallel_run(layout)
    one = reference["first"]
    last = ranks[-1]  # the last pipeline stage computes the losses; all ranks report them
    for rank in ranks:
        assert rank["order"] == one["order"]  # the same global batches
        assert rank["losses"] == pytest.approx(one["losses"], abs=LOSS_ATOL)
        assert rank["replica_grad_diff"] <= 1e-7  # replicated gradients agree across tensor/data ranks
    if layout in DATA_PARALLEL_2:
        for step in range(2):
            assert ranks[0]["local_order"][step] + ranks[1]["local_order"][step] == one["order"][step]
    else:  # tensor and pipeline ranks of one replica train on the same sequences
        assert ranks[0]["local_order"] == ranks[1]["local_order"] == one["order"]
    assert [h["grad_norm"] for h in last["history"]] == pytest.approx([h["grad_norm"] for h in one["history"]],
                                                                       rel=1e-5)  # fmt: skip
    for kind in ("grads", "audio_grads"):
        want = reference[kind]
        got = _full_gradients(Path(f"{tmp / 'res'}.{kind}"), tiny_dataset)
        assert set(got) == set(want)
        trained = [n for n in want if not n.startswith(NO_GRADIENT) and want[n].abs().max() > 0]
        worst, name = worst_relative_diff(got, {n: want[n] for n in trained})
        assert worst < GRAD_RTOL, f"{kind}: {name} differs by {worst:.2e} of its largest gradient"
    grads = reference["grads"]
    text_only = [n for n in grads if not n.startswith(NO_GRADIENT) and grads[n].abs().max() == 0]
    assert all(n.startswith(("audio_embeddings.", "audio_heads.")) for n in text_only), text_only
    audio = reference["audio_grads"]
    for part in ("router", "experts", "layernorm", "word_embeddings", "output_layer", "vit.blocks.",
                 "vit.projector.", "audio_encoder.layers.", AUDIO_WAY_IN, "audio_embeddings.",
                 "audio_heads."):  # fmt: skip
        kind = audio if part.startswith("audio_") and "encoder" not in part else reference["grads"]
        assert any(part in n and kind[n].abs().max() > 0 for n in kind), f"no trained {part} gradient"
    # router biases: equal on every rank that holds the layer, and equal to one process's
    if layout == "pp2":
        # dense sub-layers are numbered over the whole model (2 ScMoE layers = dense layers 1-4)
        assert [r["dense_layer_numbers"] for r in ranks] == [[1, 2], [3, 4]]
        assert [len(r["biases"]) for r in ranks] == [1, 1]
        held = [ranks[0]["biases"][0], ranks[1]["biases"][0]]
    else:
        assert all(torch.equal(a, b) for a, b in zip(ranks[0]["biases"], ranks[1]["biases"]))
        held = ranks[0]["biases"]
    assert len(held) == len(one["biases"]) and any(b.abs().max() > 0 for b in held)
    for got, want in zip(held, one["biases"]):
        assert torch.allclose(got, want, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tp2-sp", "dp2"])
def test_saved_at_2_processes_resumes_at_1_on_the_next_sample(layout, parallel_run, reference, tiny_dataset,
                                                               tmp_path):  # fmt: skip
    ranks, tmp = parallel_run(layout)
    if layout == "dp2":  # evaluation's loader reads the checkpoint written with FSDP-sharded encoders as is
        from components.evaluation.scoring import load_checkpoint_model

        saved = dict(load_checkpoint_model(tmp / "out").model.named_parameters())
        init = _full_gradients(reference["init"], tiny_dataset)  # (the initial weights, loaded the same way)
        for prefix in ("vit.blocks.", "vit.projector.", "audio_encoder.layers.", AUDIO_WAY_IN):
            assert any(n.startswith(prefix) and not torch.equal(p, init[n]) for n, p in saved.items()), prefix
    resumed = run_worker(WORKER, 1, tmp_path / "resumed", "--dataset", tiny_dataset, "--out", tmp / "out",
                         "--init", reference["init"], "--steps", 4, "--resume")[0]  # fmt: skip
    straight = reference["straight"]
    assert ranks[0]["sequences"] == 4 and resumed["sequences"] == 8 and resumed["steps"] == 4
    assert ranks[0]["order"] + resumed["order"] == straight["order"]  # none lost, none repeated
    # what the 2 processes trained on: each its half at data parallel 2, the same sequences at tensor parallel 2
    before = [keys for rank in (ranks if layout in DATA_PARALLEL_2 else ranks[:1]) for keys in rank["local_order"]]
    trained = collections.Counter(key for keys in before + resumed["local_order"] for key in keys)
    assert trained == collections.Counter(key for keys in straight["order"] for key in keys)
    # weights, Adam moments (megatron's and the sharded encoders' AdamW) and router biases resharded from
    # TP=2 / DP=2: the same losses as one process all along
    assert resumed["losses"] == pytest.approx(straight["losses"][2:], abs=LOSS_ATOL)
    if layout == "dp2":  # and the same encoder weights as 4 uninterrupted steps: their AdamW state came back
        got = _full_gradients(tmp / "out", tiny_dataset)
        want = _full_gradients(reference["straight_out"], tiny_dataset)
        encoders = {n: w for n, w in want.items() if n.startswith(("vit.", "audio_encoder."))}
        worst, name = worst_relative_diff(got, encoders)
        assert worst < WEIGHT_RTOL, f"{name} differs by {worst:.2e} of its largest weight"


@pytest.mark.slow
def test_bench_parallel_summary_of_a_layout(parallel_run, reference, tiny_dataset):
    """`omnistage bench parallel`'s row and JSON document, built from this module's TP2 run (no extra launch)."""
    ranks, tmp = parallel_run("tp2-sp")
    got = _full_gradients(Path(f"{tmp / 'res'}.grads"), tiny_dataset)
    row = bench.summarise_layout(reference["first"], ranks, worst_relative_diff(got, reference["grads"]))
    assert set(row) == set(bench.LAYOUT_KEYS)
    assert 0 < row["max_rel_grad_diff"] < GRAD_RTOL and row["worst_parameter"] in got  # TP reorders sums
    assert 0 <= row["loss_diff"] < LOSS_ATOL
    assert row["tokens_per_s"] > 0 and row["throughput_vs_1proc"] > 0
    assert row["encoder_parallel"] == ranks[0]["encoder_parallel"] in ("replicated", "fsdp2")  # run_stage says
    sharded = [dict(rank, encoder_parallel="fsdp2") for rank in ranks]  # the label follows the records
    assert bench.summarise_layout(reference["first"], sharded, (0.0, ""))["encoder_parallel"] == "fsdp2"
    settings = bench.BenchSettings(tiny_dataset, tiny_dataset / "tokenizer.json", layouts=["tp2-sp"])
    results = bench.build_results(settings, reference["first"], {"tp2-sp": row}, {})
    assert set(results) == set(bench.TOP_KEYS) and results["multimodal_vs_text_ratio"] is None
    assert results["one_process"]["encoder_parallel"] == reference["first"]["encoder_parallel"]
    assert "tp2-sp" in bench.format_table(results)
    other = [dict(rank, order=rank["order"][::-1]) for rank in ranks]  # other global batches: not comparable
    with pytest.raises(RuntimeError, match="other global batches"):
        bench.summarise_layout(reference["first"], other, (0.0, ""))
