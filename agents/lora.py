"""Low-rank adapters (LoRA, Hu et al. 2021) for parameter-efficient fine-tuning of a warm-started encoder.

Every linear layer W [out, in] of the encoder gains a trainable low-rank update, y = x (W + s B A)^T + b with
A [r, in] and B [out, r], s = alpha / r; W, b and every other weight of the encoder (embeddings, norms) stay as
the warm start left them. B starts at zero, so the adapted encoder computes exactly what the warm-started one
does until the first update, and fine-tuning moves r (in + out) numbers per layer instead of in x out.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LORA_KEYS = ("lora_a", "lora_b")  # the adapters' own entries in a state dict (absent from a warm start's)


class LoRALinear(nn.Linear):
    """A linear layer with a frozen weight and bias and a trainable update s B A of rank r.

    An nn.Linear still (its `weight` and `bias` keep their state-dict names), so a warm start saved
    without adapters loads into it; code that reads the weight itself instead of calling the layer reads
    :func:`linear_weights`, which includes the update.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        self.rank, self.scale = rank, alpha / rank
        # A as nn.Linear's own init draws its weight (Kaiming uniform); B zero: no change before training.
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, dtype=base.weight.dtype))

    def merged_weight(self) -> Tensor:
        """[out, in] W + s B A (differentiable in A and B)."""
        return self.weight + self.scale * (self.lora_b @ self.lora_a)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def linear_weights(layer: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """The weight [out, in] and bias [out] a linear layer applies (with its adapter's update, if it has one)."""
    weight = layer.merged_weight() if isinstance(layer, LoRALinear) else layer.weight
    return weight, layer.bias


def add_adapters(module: nn.Module, rank: int, alpha: float) -> None:
    """Freeze every weight of `module` and give each of its linear layers a LoRALinear update of `rank`
    (in place)."""
    module.requires_grad_(False)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, LoRALinear(child, rank, alpha))


def load_warm_start(encoder: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a warm start's encoder `state` into `encoder`, which may carry adapters the state lacks (they
    keep their initial values: B zero, no change). Any other missing or unexpected key is an error."""
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [key for key in missing if key.rsplit(".", 1)[-1] not in LORA_KEYS]
    if missing or unexpected:
        raise RuntimeError(f"warm start does not fit the encoder: missing {missing[:3]}, unexpected {unexpected[:3]}")
