"""MoE with zero-computation experts, as in LongCat-Flash (REFERENCE.md section 2).

The router scores N FFN experts and Z identity experts together (softmax in fp32), picks the top-k by
score + bias (the bias changes the choice only), and weights each chosen expert by `scaling * p`, with no
renormalisation. Only the FFN part is dispatched to megatron's experts; the identity part is computed
where the token is (`u * sum p_identity`), so identity experts hold no weights and cost no
communication. `ExpertBiasController` moves the biases, outside the gradient, so that the average
number of FFN experts per token approaches a target while load stays balanced across FFN experts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from megatron.core.transformer.moe.moe_layer import MoELayer
from megatron.core.transformer.moe.router import TopKRouter


class ZeroComputationRouter(TopKRouter):
    """TopKRouter over FFN + identity experts with LongCat's softmax-then-biased-top-k selection."""

    def __init__(self, config, pg_collection=None, num_zero_experts: int = 0):
        routed = copy.copy(config)
        routed.num_moe_experts = config.num_moe_experts + num_zero_experts
        super().__init__(config=routed, pg_collection=pg_collection)
        self.num_ffn_experts = config.num_moe_experts
        self.num_zero_experts = num_zero_experts
        # megatron-core allows expert bias only with sigmoid scores, and updates it toward equal load;
        # LongCat uses softmax scores and its own controller, so the buffers are kept here instead.
        self.enable_expert_bias = True
        del self.local_tokens_per_expert, self.expert_bias  # plain None attributes set by TopKRouter
        self.register_buffer("local_tokens_per_expert", torch.zeros(routed.num_moe_experts), persistent=False)
        self.register_buffer("expert_bias", torch.zeros(routed.num_moe_experts))

    def routing(self, logits: torch.Tensor, padding_mask: torch.Tensor | None = None):
        logits = logits.view(-1, self.config.num_moe_experts)
        scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
        selection = scores + self.expert_bias if self.expert_bias is not None else scores
        _, top = torch.topk(selection, k=self.topk, dim=-1)
        picked = torch.gather(scores, 1, top) * (self.config.moe_router_topk_scaling_factor or 1.0)
        probs = torch.zeros_like(scores).scatter(1, top, picked).type_as(logits)
        routing_map = torch.zeros_like(scores, dtype=torch.bool).scatter(1, top, True)
        if padding_mask is not None:
            padding_mask = padding_mask.reshape(-1, 1)
        self._apply_expert_bias(routing_map, padding_mask=padding_mask)
        return probs, routing_map


class ZeroComputationMoELayer(MoELayer):
    """megatron's MoELayer with the identity experts' share added locally after the combine."""

    def route(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None):
        probs, routing_map = self.router(hidden_states, padding_mask)
        num_ffn = self.router.num_ffn_experts
        self._identity = (hidden_states, probs[:, num_ffn:].sum(-1))
        with torch.no_grad():
            self.last_num_ffn_experts = routing_map[:, :num_ffn].sum(-1).float().mean()
        return probs[:, :num_ffn].contiguous(), routing_map[:, :num_ffn].contiguous()

    def postprocess(self, output: torch.Tensor, shared_expert_output: torch.Tensor | None):
        output = super().postprocess(output, shared_expert_output)
        hidden, weight = self._identity
        self._identity = None
        return output + hidden * weight.view(*hidden.shape[:-1], 1).to(hidden.dtype)


def expert_weights(experts: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(fc1 [2 * ffn, hidden] gate+up, fc2 [hidden, ffn]) weights of each local FFN expert, whichever experts
    module the spec built: SequentialMLP (one MLP per expert) or TEGroupedMLP (grouped linears holding
    `weight0..weightN-1`; model.llm.spec.grouped_gemm_available)."""
    if hasattr(experts, "local_experts"):
        return [(e.linear_fc1.weight, e.linear_fc2.weight) for e in experts.local_experts]
    fc1, fc2 = experts.linear_fc1, experts.linear_fc2
    return [(getattr(fc1, f"weight{i}"), getattr(fc2, f"weight{i}")) for i in range(experts.num_local_experts)]


@dataclass
class BiasControllerConfig:
    target_ffn_experts: float = 8.0
    kp: float = 1e-3  # bias change per unit of error in FFN experts per token
    ki: float = 1e-4
    balance_rate: float = 1e-3  # megatron-style sign update toward equal load across FFN experts


class ExpertBiasController:
    """A PI controller on the router biases; call `step()` after each optimizer step."""

    def __init__(self, model: torch.nn.Module, config: BiasControllerConfig, group=None):
        self.routers = [m for m in model.modules() if isinstance(m, ZeroComputationRouter)]
        self.config = config
        self.group = group
        self.integral = [0.0] * len(self.routers)
        self.last_ffn_experts_per_token: float | None = None

    def state_dict(self) -> dict:
        return {"integral": list(self.integral)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["integral"]) != len(self.routers):
            raise ValueError("bias-controller state is for a model with another number of MoE layers")
        self.integral = list(state["integral"])

    @torch.no_grad()
    def step(self) -> float | None:
        measured = []
        for index, router in enumerate(self.routers):
            counts = router.local_tokens_per_expert
            if self.group is not None and torch.distributed.is_initialized():
                torch.distributed.all_reduce(counts, group=self.group)
            tokens = counts.sum() / router.topk
            if tokens <= 0:
                continue
            ffn = counts[: router.num_ffn_experts]
            per_token = float(ffn.sum() / tokens)
            error = per_token - self.config.target_ffn_experts
            self.integral[index] += error
            shift = self.config.kp * error + self.config.ki * self.integral[index]
            router.expert_bias[: router.num_ffn_experts] -= shift
            router.expert_bias[router.num_ffn_experts :] += shift
            router.expert_bias[: router.num_ffn_experts] += self.config.balance_rate * torch.sign(ffn.mean() - ffn)
            counts.zero_()
            measured.append(per_token)
        self.last_ffn_experts_per_token = sum(measured) / len(measured) if measured else None
        return self.last_ffn_experts_per_token
