"""Dropout whose CPU random numbers cost a quarter of PyTorch's.

On CPU, `torch.bernoulli_` (what `nn.Dropout` and `scaled_dot_product_attention`'s dropout call)
draws one random number per element from a scalar generator: in a BERT-mini training step on two
cores it was a fifth of the step, more than all the forward matmuls together (BENCHMARKS.md §1).
Here one 64-bit draw serves four elements: it is cut into four 16-bit lanes, and an element is
kept when its lane is at or above p·2¹⁶. So p is rounded to a multiple of 1/65,536 (0.1 becomes
0.100006), each element is still dropped independently, and kept elements are scaled by
1/(1 - p) as usual. The draws come from the same global generator, so `torch.manual_seed` and the
trainer's saved RNG state still make runs repeat exactly. CUDA keeps `F.dropout` (its Philox
generator is already fast).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LANES = 4  # 16-bit lanes per 64-bit draw


def _dropped(p: float) -> int:
    """Of the 65,536 values a lane can take, how many drop the element: p rounded."""
    return round(p * 65536)


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    p: float,
    device: torch.device,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """Mask of `shape`, each element kept (True, or 1 in `dtype`) with probability 1 - p (p
    rounded to 1/65,536)."""
    n = math.prod(shape)
    # random_(lowest, None) fills the full int64 range; the default range stops at 2**63 - 1,
    # which would leave one lane's sign bit always 0.
    bits = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64, device=device)
    bits.random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    dropped = _dropped(p)
    if dtype == torch.bool:
        return lanes >= dropped - 32768
    if dropped == 0:
        return torch.ones(shape, dtype=dtype, device=device)
    # 0/1 without a bool tensor: CPU kernels that mix bool with other dtypes are 2-3x slower
    # than these int16 ones. A lane below the threshold clamps to it - 1, anything else to it.
    lo = dropped - 32768 - 1
    return lanes.clamp(lo, lo + 1).sub_(lo).to(dtype)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the cheaper CPU mask."""
    if not training or p == 0.0:
        return x
    dropped = _dropped(p)
    if x.device.type != "cpu" or dropped >= 65536:
        return F.dropout(x, p if dropped < 65536 else 1.0, training)
    # A uint8 0/1 mask: one byte an element kept for backward, like bool, and multiplying by it
    # (forward and backward) runs ~25% faster than by a bool mask (BENCHMARKS.md section 1).
    keep = keep_mask(x.shape, p, x.device, torch.uint8)
    # the in-place scale is safe because autograd keeps mul's inputs, not its output.
    return (x * keep).mul_(65536 / (65536 - dropped))


class Dropout(nn.Dropout):
    """Drop-in `nn.Dropout` (same state dict: none) that uses `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
