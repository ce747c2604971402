"""GPU-only paths of the same model code: bf16 on CUDA, Transformer Engine pieces. Skipped without CUDA.

Context parallelism on TE attention (tests/model/test_context_parallel.py; on CPU the local attention runs
it), the distributed optimizer (tests/components/training/test_gpu_training.py) and grouped-GEMM experts
exist only on GPUs; on CPU the same modules run with the local attention and SequentialMLP experts (see
model/megatron_compat.py, tests/model/test_devices.py).
"""

import pytest
import torch

from model.config import get_preset

pytestmark = pytest.mark.gpu


def test_tiny_llm_bf16_on_cuda(single_process):
    from model.llm.model import build_llm

    cfg = get_preset("tiny").llm
    model = build_llm(cfg, params_dtype=torch.bfloat16).cuda()
    ids = torch.randint(0, cfg.vocab_size, (2, 32), device="cuda")
    pos = torch.arange(32, device="cuda")[None].expand(2, -1)
    loss = model(ids, pos, attention_mask=None, labels=ids).float().mean()
    loss.backward()
    assert torch.isfinite(loss)


def test_transformer_engine_attention_is_used_on_gpu():
    pytest.importorskip("transformer_engine")
    from megatron.core.extensions.transformer_engine import TEDotProductAttention

    from model.llm.spec import core_attention_class

    assert core_attention_class() is TEDotProductAttention  # context parallelism needs it


def test_grouped_gemm_experts_match_sequential_mlp_from_one_checkpoint(single_process, tmp_path):
    """TEGroupedMLP (what the spec picks here) loads a SequentialMLP checkpoint through dist_checkpointing and
    gives the same loss and gradients: the two expert layouts are interchangeable."""
    pytest.importorskip("transformer_engine")
    from megatron.core import dist_checkpointing

    from model.llm.model import build_llm
    from model.llm.moe import expert_weights
    from model.llm.spec import grouped_gemm_available

    assert grouped_gemm_available()
    cfg = get_preset("tiny").llm
    torch.manual_seed(0)
    sequential = build_llm(cfg, moe_grouped_gemm=False).cuda()
    grouped = build_llm(cfg).cuda()
    assert hasattr(sequential.decoder.layers[0].moe.experts, "local_experts")
    assert not hasattr(grouped.decoder.layers[0].moe.experts, "local_experts")
    dist_checkpointing.save(sequential.sharded_state_dict(), str(tmp_path))
    grouped.load_state_dict(dist_checkpointing.load(grouped.sharded_state_dict(), str(tmp_path)), strict=False)
    ids = torch.randint(0, cfg.vocab_size, (2, 32), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    pos = torch.arange(32, device="cuda")[None].expand(2, -1)
    losses = []
    for model in (sequential, grouped):
        loss = model(ids, pos, attention_mask=None, labels=ids).mean()
        loss.backward()
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    pairs = [(a, b) for la, lb in zip(sequential.decoder.layers, grouped.decoder.layers)
             for ea, eb in zip(expert_weights(la.moe.experts), expert_weights(lb.moe.experts))
             for a, b in zip(ea, eb)]  # fmt: skip
    assert len(pairs) == 2 * cfg.num_experts * cfg.num_layers
    for a, b in pairs:
        assert torch.equal(a, b)  # the checkpoint carried every expert weight across
        assert a.grad.abs().max() > 0
        assert (a.grad - b.grad).abs().max() <= 1e-3 * a.grad.abs().max()
