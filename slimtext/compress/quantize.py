"""Post-training quantization of Linear (and embedding-table) weights, saved as plain tensors.

    quantize_(model, Int8Dynamic())          # int8 weights, int8 activations quantized per call
    quantize_(model, Int8WeightOnly())       # int8 weights, float matmul (a storage format)
    quantize_(model, Int4WeightOnly(32))     # int4 weights in groups of 32 (a storage format)
    quantize_within_budget(model, Int8Dynamic(), valid, ..., max_accuracy_drop=0.01)

Why our own modules rather than torchao: torchao 0.18 installs with torch 2.13, but on this CPU
its `Int8DynamicActivationInt8WeightConfig` ran ~2x *slower* than fp32 (measured on a 256x1024
Linear), and its weights are tensor subclasses that safetensors cannot store. The fast CPU int8
GEMM is fbgemm's `quantized::linear_dynamic` (the kernel under the deprecated
`torch.ao.quantization.quantize_dynamic`), which we call directly; the packed weight is rebuilt
from plain int8 + scale tensors, which is what the model directory stores:

    <name>.qweight  int8 (out, in)              per-output-channel symmetric, zero point 0
                    uint8 (out, in/2) for int4  two 4-bit values per byte, offset by 8
    <name>.scale    float32 (out,) or (out, in/group)
    <name>.bias     float32 (out,)

and config.json's `compression` list records the method and the quantized module names, so
`read_model_dir` can rebuild the structure before loading the weights.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._util import record, recorded, set_module

METHODS = ("int8-dynamic", "int8-weight", "int4-weight")


# ---- configs ------------------------------------------------------------------------------------
@dataclass
class Int8Dynamic:
    """int8 weights (per output channel) and int8 activations (per call): the CPU speed-up."""

    embeddings: bool = True  # int8 token embeddings too: they are most of a small model's bytes
    skip: tuple[str, ...] = ()  # module names kept in float
    version: int = 1
    method: str = field(default="int8-dynamic", init=False)

    def __post_init__(self) -> None:
        self.skip = tuple(self.skip)


@dataclass
class Int8WeightOnly:
    """int8 weights dequantized at load: 4x smaller on disk, float speed."""

    embeddings: bool = True
    skip: tuple[str, ...] = ()
    version: int = 1
    method: str = field(default="int8-weight", init=False)

    def __post_init__(self) -> None:
        self.skip = tuple(self.skip)


@dataclass
class Int4WeightOnly:
    """int4 weights with one scale per `group_size` inputs: ~7x smaller Linear weights on disk,
    dequantized at load (no int4 CPU kernel here), float speed."""

    group_size: int = 32
    embeddings: bool = True  # embeddings go to int8 (int4 rows hurt accuracy most)
    skip: tuple[str, ...] = ()
    version: int = 1
    method: str = field(default="int4-weight", init=False)

    def __post_init__(self) -> None:
        self.skip = tuple(self.skip)
        if self.group_size < 2 or self.group_size % 2:
            raise ValueError(f"group_size must be an even number >= 2, got {self.group_size}")


QuantConfig = Int8Dynamic | Int8WeightOnly | Int4WeightOnly


def config_from_method(method: str, **kw) -> QuantConfig:
    table = {
        "int8-dynamic": Int8Dynamic,
        "int8-weight": Int8WeightOnly,
        "int4-weight": Int4WeightOnly,
    }
    if method not in table:
        raise ValueError(f"quantization method must be one of {METHODS}, got {method!r}")
    return table[method](**kw)


# ---- quantized modules --------------------------------------------------------------------------
def _quant_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: w ~ q * scale[:, None], q in [-127, 127]."""
    scale = (w.abs().amax(1) / 127.0).clamp_min(1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.float()


_DENSE_INT8 = [0]  # > 0 inside `dense_int8()`


@contextlib.contextmanager
def dense_int8():
    """Inside this block every `Int8Linear` computes with its dequantized weight instead of
    fbgemm's int8 kernel. ONNX export runs here: the graph then holds plain MatMuls on the
    int8 weights' exact float values (no fbgemm op to export), and the parity check compares
    it with the same float computation. ONNX Runtime's own int8 (`export --int8`) re-quantizes
    those weights."""
    _DENSE_INT8[0] += 1
    try:
        yield
    finally:
        _DENSE_INT8[0] -= 1


@functools.cache
def _has_fbgemm() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or (
        "x86" in torch.backends.quantized.supported_engines
    )


class Int8Linear(nn.Module):
    """Linear with int8 weights. `dynamic=True`: fbgemm int8 x int8 GEMM with activations
    quantized per call (inference only); otherwise the weight is dequantized once and cached."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dynamic=True):
        super().__init__()
        self.in_features, self.out_features, self.dynamic = in_features, out_features, dynamic
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed = None  # fbgemm packed weight, rebuilt after any load
        self._dense = None

    @classmethod
    def from_linear(cls, lin: nn.Linear, dynamic: bool = True) -> Int8Linear:
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, dynamic)
        q, s = _quant_int8(lin.weight.detach().float().cpu())
        m.qweight.copy_(q)
        m.scale.copy_(s)
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach().float().cpu())
        return m

    def n_params(self) -> int:
        return self.qweight.numel() + (0 if self.bias is None else self.bias.numel())

    def dequantize(self) -> torch.Tensor:
        return self.qweight.float() * self.scale[:, None]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._packed = self._dense = None

    def _pack(self):
        zp = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # the quantized-tensor API warns it is deprecated
            warnings.simplefilter("ignore")
            qw = torch._make_per_channel_quantized_tensor(self.qweight, self.scale.double(), zp, 0)
        return torch.ops.quantized.linear_prepack(qw, self.bias)

    # Left out of torch.compile: fbgemm's op breaks the graph, and each of a model's Int8Linear
    # modules then became a frame of its own, compiled per module and per shape until dynamo's
    # recompile limit (58 recompiles for a 2-layer model) and run uncompiled after it.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.dynamic
            and not _DENSE_INT8[0]
            and _has_fbgemm()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
        ):
            if self._packed is None:
                self._packed = self._pack()
            # reduce_range=True: 7-bit activations, so the int16 accumulation in fbgemm's
            # non-VNNI path cannot saturate (what quantize_dynamic does on x86).
            return torch.ops.quantized.linear_dynamic(x, self._packed, True)
        if self._dense is None or self._dense.device != x.device:
            self._dense = self.dequantize().to(x.device)
        return F.linear(
            x, self._dense.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype)
        )

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, dynamic={self.dynamic}"


class Int4Linear(nn.Module):
    """Linear with group-wise symmetric int4 weights (values -8..7 stored +8, two per byte)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size=32):
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} not divisible by group {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer(
            "qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        )
        self.register_buffer("scale", torch.ones(out_features, in_features // group_size))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._dense = None

    @classmethod
    def from_linear(cls, lin: nn.Linear, group_size: int = 32) -> Int4Linear:
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, group_size)
        w = lin.weight.detach().float().cpu().view(lin.out_features, -1, group_size)
        scale = (w.abs().amax(-1) / 7.0).clamp_min(1e-12)  # (out, groups)
        q = (
            (torch.round(w / scale[..., None]).clamp(-8, 7) + 8)
            .to(torch.uint8)
            .view(lin.out_features, -1)
        )
        m.qweight.copy_(q[:, 0::2] | (q[:, 1::2] << 4))
        m.scale.copy_(scale)
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach().float().cpu())
        return m

    def n_params(self) -> int:
        return self.qweight.numel() * 2 + (0 if self.bias is None else self.bias.numel())

    def dequantize(self) -> torch.Tensor:
        # Unpacked in float arithmetic (exact for 0..255), not with `& 0xF` / `>> 4` on uint8:
        # the dynamo ONNX exporter turns the uint8 shift into an int16 value that the uint8
        # `view` after it does not match, and ONNX Runtime then refuses the whole graph.
        w = self.qweight.float()
        hi = torch.div(w, 16, rounding_mode="floor")
        q = torch.stack([w - 16 * hi, hi], -1).view(self.out_features, -1) - 8.0
        g = q.view(self.out_features, -1, self.group_size) * self.scale[..., None]
        return g.view(self.out_features, self.in_features)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._dense = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dense is None or self._dense.device != x.device:
            self._dense = self.dequantize().to(x.device)
        return F.linear(
            x, self._dense.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype)
        )


class Int8Embedding(nn.Module):
    """Token embedding with int8 rows and one scale per row: a lookup then a multiply."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.padding_idx = padding_idx
        self.register_buffer(
            "qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8)
        )
        self.register_buffer("scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> Int8Embedding:
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        q, s = _quant_int8(emb.weight.detach().float().cpu())
        m.qweight.copy_(q)
        m.scale.copy_(s)
        return m

    @property
    def num_embeddings(self) -> int:  # as nn.Embedding's (models/transformer.py reads it)
        return self.qweight.shape[0]

    def n_params(self) -> int:
        return self.qweight.numel()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.qweight).float() * self.scale[ids].unsqueeze(-1)


# ---- the verb -----------------------------------------------------------------------------------
# Embedding tables that go to int8 rows: the token table, and the attention model's hashed
# n-gram table (up to millions of rows: most of such a model's bytes).
EMBEDDING_TABLES = ("tok", "ngram")


def _targets(model: nn.Module, config: QuantConfig) -> list[str]:
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and n not in config.skip]
    if config.embeddings:
        names += [
            n for n, m in model.named_modules()
            if type(m) is nn.Embedding and n.endswith(EMBEDDING_TABLES) and n not in config.skip
        ]  # fmt: skip
    return names


def _quantized(m: nn.Module, config: QuantConfig) -> nn.Module:
    if isinstance(m, nn.Embedding):
        return Int8Embedding.from_embedding(m)
    if isinstance(config, Int4WeightOnly):
        if m.in_features % config.group_size == 0:
            return Int4Linear.from_linear(m, config.group_size)
        return Int8Linear.from_linear(m, dynamic=False)  # odd width: int8 rather than nothing
    return Int8Linear.from_linear(m, dynamic=isinstance(config, Int8Dynamic))


def quantize_(model: nn.Module, config: QuantConfig) -> dict:
    """Quantize `model` in place (CPU, inference); returns the `compression` record."""
    if not isinstance(config, (Int8Dynamic, Int8WeightOnly, Int4WeightOnly)):
        raise TypeError(f"quantize_ does not handle {type(config).__name__}")
    model.cpu().eval()
    if isinstance(config, Int4WeightOnly):
        # The widths at this step (a prune or distil before it changes them): a group that
        # divides none left every layer int8 under an "int4-weight" record, without a word
        linears = [model.get_submodule(n) for n in _targets(model, config)]
        widths = sorted({m.in_features for m in linears if isinstance(m, nn.Linear)})
        if widths and not any(w % config.group_size == 0 for w in widths):
            raise ValueError(
                f"int4-weight group={config.group_size} divides none of the layers' input widths "
                f"at this step ({', '.join(map(str, widths))}): every layer would be int8; "
                "choose a group that divides them"
            )
    done = {}
    for name in _targets(model, config):
        new = _quantized(model.get_submodule(name), config)
        set_module(model, name, new)
        done[name] = type(new).__name__
    return recorded(model, record("quantize", config, modules=done))


def restore_quantized_(model: nn.Module, rec: dict) -> None:
    """Swap in empty quantized modules of the recorded kinds, shapes taken from the model."""
    cfg = rec["config"]
    for name, kind in rec["modules"].items():
        old = model.get_submodule(name)
        if kind == "Int8Embedding":
            new = Int8Embedding(old.num_embeddings, old.embedding_dim, old.padding_idx)
        elif kind == "Int4Linear":
            new = Int4Linear(old.in_features, old.out_features, old.bias is not None,
                             cfg.get("group_size", 32))  # fmt: skip
        else:
            new = Int8Linear(old.in_features, old.out_features, old.bias is not None,
                             dynamic=cfg.get("method") == "int8-dynamic")  # fmt: skip
        set_module(model, name, new)


# ---- accuracy gate ------------------------------------------------------------------------------
def quantize_within_budget(
    model: nn.Module,
    config: QuantConfig,
    valid,
    *,
    label_names: Sequence[str],
    pad_id: int,
    max_accuracy_drop: float = 0.01,
    batch_size: int = 128,
) -> dict:
    """Quantize `model` in place, keeping in float the Linear layers whose quantization costs the
    most validation accuracy until the drop from float is within `max_accuracy_drop` (absolute).

    Sensitivity of each layer = accuracy lost when it alone is quantized; layers are restored to
    float most-sensitive first. The record lists the layers kept in float and the accuracies.
    """
    from ..train.evaluate import evaluate

    def acc(m: nn.Module) -> float:
        # Per text (windows pooled, as at inference), so the budget is the accuracy users see.
        return evaluate(m, valid.ids, valid.labels, label_names, pad_id, batch_size,
                        owner=getattr(valid, "owner", None))["accuracy"]  # fmt: skip

    model.cpu().eval()
    base = acc(model)
    names = _targets(model, config)
    sensitivity = {}
    for name in names:
        trial = copy.deepcopy(model)
        set_module(trial, name, _quantized(trial.get_submodule(name), config))
        sensitivity[name] = base - acc(trial)
    order = sorted(names, key=lambda n: -sensitivity[n])
    kept: list[str] = []
    while True:
        skip = tuple(config.skip) + tuple(kept)
        trial = copy.deepcopy(model)
        trial_cfg = copy.copy(config)
        trial_cfg.skip = skip
        rec = quantize_(trial, trial_cfg)
        drop = base - acc(trial)
        if drop <= max_accuracy_drop or len(kept) == len(order):
            break
        kept.append(order[len(kept)])
    # Commit: apply the accepted plan to the caller's model.
    rec = quantize_(model, trial_cfg)
    rec.update(
        float_accuracy=base,
        quantized_accuracy=base - drop,
        max_accuracy_drop=max_accuracy_drop,
        kept_float=kept,
        sensitivity={k: round(v, 6) for k, v in sensitivity.items()},
    )
    return rec
