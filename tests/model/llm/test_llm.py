"""The tiny LLM on one CPU process: shapes, causality, ScMoE semantics, identity experts, bias control."""

import pytest
import torch

from model.config import get_preset
from model.llm.model import build_llm
from model.llm.moe import (
    BiasControllerConfig,
    ExpertBiasController,
    ZeroComputationMoELayer,
    ZeroComputationRouter,
    expert_weights,
)

CFG = get_preset("tiny").llm


def _batch(seed=0, batch=2, seq=16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CFG.vocab_size, (batch, seq), generator=g)
    return ids, torch.arange(seq)[None].expand(batch, -1)


def test_forward_backward_shapes(single_process):
    model = build_llm(CFG)
    ids, pos = _batch()
    logits = model(ids, pos, attention_mask=None)
    assert logits.shape == (2, 16, CFG.vocab_size)
    loss = model(ids, pos, attention_mask=None, labels=ids)
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.output_layer.weight is not model.embedding.word_embeddings.weight  # untied lm_head


def test_causal(single_process):
    model = build_llm(CFG).eval()
    ids, pos = _batch()
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % CFG.vocab_size
    with torch.no_grad():
        a, b = model(ids, pos, attention_mask=None), model(changed, pos, attention_mask=None)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-5)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_layer_structure_matches_scmoe(single_process):
    model = build_llm(CFG)
    layer = model.decoder.layers[0]
    assert len(layer.dense_layers) == 2 and isinstance(layer.moe, ZeroComputationMoELayer)
    router = layer.moe.router
    assert router.weight.shape == (CFG.num_experts + CFG.num_zero_experts, CFG.hidden_size)
    assert len(expert_weights(layer.moe.experts)) == CFG.num_experts  # identity experts hold no weights
    attn = layer.dense_layers[0].self_attention
    scale = attn.q_layernorm.output_scale, attn.kv_layernorm.output_scale
    assert scale == pytest.approx(
        ((CFG.hidden_size / CFG.q_lora_rank) ** 0.5, (CFG.hidden_size / CFG.kv_lora_rank) ** 0.5)
    )


def test_identity_experts_return_their_input_scaled(single_process):
    """Biases that force every pick onto identity experts make the MoE output = scaling * sum(p) * u."""
    model = build_llm(CFG)
    moe = model.decoder.layers[0].moe
    router = moe.router
    with torch.no_grad():
        router.expert_bias[: CFG.num_experts] = -10.0
        router.expert_bias[CFG.num_experts :] = 10.0
    u = torch.randn(8, 2, CFG.hidden_size)
    out, _ = moe(u)
    logits = u.reshape(-1, CFG.hidden_size) @ router.weight.t()
    probs = torch.softmax(logits.float(), -1)[:, CFG.num_experts :]
    top = probs.topk(CFG.topk, -1).values.sum(-1) * CFG.routed_scaling_factor
    assert torch.allclose(out, u * top.view(8, 2, 1), atol=1e-5)
    assert float(moe.last_num_ffn_experts) == 0.0


def test_moe_matches_a_plain_reference(single_process):
    """Routed output equals sum over chosen FFN experts of scale * p * SwiGLU_e(u) plus the identity share."""
    model = build_llm(CFG)
    moe = model.decoder.layers[1].moe
    u = torch.randn(5, 1, CFG.hidden_size)
    out, _ = moe(u)
    flat = u.reshape(-1, CFG.hidden_size)
    scores = torch.softmax((flat @ moe.router.weight.t()).float(), -1)
    top_p, top_i = scores.topk(CFG.topk, -1)
    expected = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for p, i in zip(top_p[t], top_i[t]):
            if i < CFG.num_experts:
                fc1, fc2 = expert_weights(moe.experts)[int(i)]
                gate, up = (flat[t] @ fc1.t()).chunk(2)
                y = (torch.nn.functional.silu(gate) * up) @ fc2.t()
            else:
                y = flat[t]
            expected[t] += CFG.routed_scaling_factor * p * y
    assert torch.allclose(out.reshape(-1, CFG.hidden_size), expected, atol=1e-4)


def test_scmoe_layer_computes_the_reference_order(single_process):
    """REFERENCE.md section 2 term by term, from the layer's own submodules: the MoE reads u = norm(h) after
    the first attention and its output joins at the very end. Moving either changes the output."""
    model = build_llm(CFG).eval()
    layer = model.decoder.layers[0]
    first, second = layer.dense_layers
    x = torch.randn(12, 2, CFG.hidden_size, generator=torch.Generator().manual_seed(3))  # [seq, batch, hidden]

    def attention(dense, h):
        out, bias = dense.self_attention(dense.input_layernorm(h), attention_mask=None)
        return out if bias is None else out + bias

    def ffn(dense, v):
        out, bias = dense.mlp(v)
        return out if bias is None else out + bias

    with torch.no_grad():
        h = x + attention(first, x)
        u = first.pre_mlp_layernorm(h)
        m, _ = layer.moe(u)
        h = h + ffn(first, u)
        h = h + attention(second, h)
        expected = h + ffn(second, second.pre_mlp_layernorm(h)) + m
        actual, _ = layer(x, attention_mask=None)
    assert torch.allclose(actual, expected, atol=1e-5)
    assert not torch.allclose(m, torch.zeros_like(m))  # the MoE term is there to be misplaced


def test_bias_controller_moves_ffn_experts_toward_target(single_process):
    torch.manual_seed(0)
    model = build_llm(CFG)
    target = 1.0
    controller = ExpertBiasController(model, BiasControllerConfig(target_ffn_experts=target, kp=0.02, ki=0.002))
    ids, pos = _batch(seq=32, batch=4)
    history = []
    for _ in range(60):
        model(ids, pos, attention_mask=None, labels=ids).mean().backward()  # counts accumulate with grad on
        model.zero_grad()
        history.append(controller.step())
    start, end = history[0], sum(history[-5:]) / 5
    assert abs(end - target) < abs(start - target) / 3, (start, end)
    assert all(isinstance(r, ZeroComputationRouter) for r in controller.routers) and len(controller.routers) == 2


def test_loss_goes_down_on_a_fixed_batch(single_process):
    torch.manual_seed(0)
    model = build_llm(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids, pos = _batch(seq=32, batch=4)
    losses = []
    for _ in range(25):
        loss = model(ids, pos, attention_mask=None, labels=ids).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
