"""GPU-only paths of the same model code: bf16 on CUDA, Transformer Engine pieces. Skipped without CUDA.

Context parallelism on TE attention (tests/model/test_context_parallel.py; on CPU the local attention runs
it), the distributed optimizer and grouped-GEMM experts exist only on
GPUs; on CPU the same modules run with the local attention and SequentialMLP experts (see
model/megatron_compat.py).
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
