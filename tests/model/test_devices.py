"""Where a process trains and which backend it uses (model.distributed), and which experts the LLM spec
builds (model.llm.spec): the CPU side of the GPU-only paths, run here; the GPU side is in test_gpu.py."""

import pytest
import torch

from model.config import get_preset
from model.distributed import backend_for, collective_device, training_device
from model.llm.model import build_llm, transformer_config
from model.llm.spec import grouped_gemm_available
from model.omni import OmniBatch
from model.vit import VisualInput


def test_backend_follows_the_device():
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU choice")
def test_without_cuda_a_process_trains_on_cpu_over_gloo_with_sequential_experts(single_process):
    assert training_device() == torch.device("cpu")
    assert torch.distributed.get_backend() == "gloo" and collective_device() == torch.device("cpu")
    assert not grouped_gemm_available()
    cfg = get_preset("tiny").llm
    assert transformer_config(cfg).moe_grouped_gemm is False
    experts = build_llm(cfg).decoder.layers[0].moe.experts
    assert type(experts).__name__ == "SequentialMLP" and len(experts.local_experts) == cfg.num_experts


def test_batch_moves_every_tensor():
    batch = OmniBatch(torch.ones(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long),
                      visuals=[VisualInput(torch.ones(3, 28, 28))], audio_features=[torch.ones(2, 640)],
                      document_ids=torch.zeros(1, 4, dtype=torch.long))  # fmt: skip
    moved = batch.to(torch.device("meta"))  # a device every machine has; the model's GPU in a CUDA run
    assert moved.input_ids.is_meta and moved.labels.is_meta and moved.document_ids.is_meta
    assert moved.visuals[0].pixels.is_meta and moved.audio_features[0].is_meta
    assert moved.audio_codes is None and batch.input_ids.device.type == "cpu"  # absent stays absent; a copy
