"""The LLM backbone: ScMoE layers (MLA attention, dense SwiGLU FFNs, MoE with zero-computation experts)."""
