"""``attn_implementation="emt_eager_gqa"``: transformers' eager attention without copying shared key/value heads.

Grouped-query attention (SmolLM2: 9 query heads share 3 key/value heads) runs in transformers' eager
path by ``repeat_kv``: every key and value head is copied once per query head that reads it, and the
scores are then one ``(1 x head_dim) @ (head_dim x keys)`` product per query head. On CPU, for a
one-token decode step of a batch of 64, that is 576 tiny matrix products and two full copies of the
cache per layer. Here the query heads of one group are stacked along the query axis instead, so each
key/value head is read in place by one ``(group*queries x head_dim)`` product: the same dot products,
with the same softmax (fp32) and the same masking as eager. Measured on the flagship's shapes (one
layer, batch 64, bf16, 2 threads): a decode step's attention 4.39 -> 0.25 ms, a 15-token prefill
1.72 -> 1.11 ms, bit-identical outputs; the whole flagship eval at batch 256, 1.11x eager with the
same answers (``scripts/bench_flagship.py --variants eager-attention,eager-gqa``).

Registered with transformers' public ``AttentionInterface`` / ``AttentionMaskInterface`` (with eager's
mask) when this module is imported, which importing the flagship's model file does; so
``from_pretrained(..., attn_implementation="emt_eager_gqa")`` and lm-eval's
``--model_args attn_implementation=emt_eager_gqa`` work for any model whose attention dispatches
through that interface, as transformers' Llama does (the one family tested), with or without grouped
heads. Why hand-written:
PyTorch's SDPA takes ``enable_gqa`` but its CPU kernel is slower than eager on one-token decode steps
(emtbench.demo.plan.eval_steps), and transformers has no grouped eager path.

This file imports nothing from emtbench: it travels with flagship checkpoints as Hub remote code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

NAME = "emt_eager_gqa"


def eager_gqa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention, (B, heads, queries, dim) x (B, kv_heads, keys, dim) -> (B, queries, heads, dim).

    Head ``h`` reads key/value head ``h // (heads // kv_heads)``, as ``repeat_kv`` arranges; the weights
    come back as (B, heads, queries, keys), as eager returns them.
    """
    batch, heads, queries, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads
    grouped = query.reshape(batch, kv_heads, group * queries, dim)
    weights = torch.matmul(grouped, key.transpose(2, 3)) * scaling
    weights = weights.view(batch, kv_heads, group, queries, keys)
    if attention_mask is not None:
        mask = attention_mask[..., :keys]
        if mask.shape[1] == 1:
            mask = mask.unsqueeze(1)  # (B, 1, 1, queries, keys): the same mask for every head
        else:
            mask = mask.reshape(mask.shape[0], kv_heads, group, queries, keys)
        weights = weights + mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights.view(batch, kv_heads, group * queries, keys), value)
    output = output.view(batch, heads, queries, dim).transpose(1, 2).contiguous()
    return output, weights.view(batch, heads, queries, keys)


AttentionInterface.register(NAME, eager_gqa_attention_forward)
AttentionMaskInterface.register(NAME, eager_mask)
