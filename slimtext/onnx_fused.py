"""A `TransformerClassifier` written straight into ONNX Runtime's fused transformer ops.

Tracing the PyTorch model gives ONNX Runtime a graph of small ops per layer (a q/k/v split,
reshapes and transposes, a masked softmax with NaN guards) that its BERT fusions do not
recognise in our fused-qkv layout. Our blocks are exactly BERT's, so instead of hoping a pattern
matcher finds them we emit the ops ORT's own `onnxruntime.transformers` optimizer would produce
for a BERT: per layer one `Attention` (q/k/v projection, scaled dot product with the key-padding
mask, and head merge in one kernel) and `BiasGelu` (exact erf GELU). The residual adds stay
`Add` + `LayerNormalization`, which ORT's CPU kernels run faster than its fused
`SkipLayerNormalization` (`_skip_ln`). Dynamic int8 quantisation then turns `Attention` into
`QAttention` and every `MatMul` into an int8 GEMM (`quantize_onnx`); after head pruning
(q/k/v narrower than the hidden size) `Attention` needs `qkv_hidden_sizes`, which ORT has no
`QAttention` for, so those layers keep float attention.

    build_fused(model) -> onnx.ModelProto     # raises FusedUnsupported for other models

Same inputs and outputs as the traced export (`input_ids` int64, `attention_mask` bool or
int64, both (B, T) dynamic; `logits` (B, num_labels)). `export_onnx` checks it against PyTorch
like any export. Weights are read from the modules as they compute (int8/int4 layers are
dequantized, low-rank layers stay two matmuls), so compressed directories take this path too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MS = "com.microsoft"


class FusedUnsupported(ValueError):
    """The model has a part this builder does not know; export falls back to tracing."""


def build_fused(model: nn.Module, mask_dtype: str = "bool", opset: int = 18):
    import onnx
    from onnx import TensorProto, helper

    from .models.transformer import TransformerClassifier

    if not isinstance(model, TransformerClassifier):
        raise FusedUnsupported(f"{type(model).__name__} is not a TransformerClassifier")
    cfg = model.config
    g = _Graph()
    mask_type = TensorProto.BOOL if mask_dtype == "bool" else TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", mask_type, ["batch", "seq"]),
    ]
    eps = float(cfg.layer_norm_eps)

    # Embeddings: token rows + the first T position rows, then LayerNorm.
    emb = model.embeddings
    tok = g.op("Gather", [g.const("tok_emb", _embedding_weight(emb.tok)), "input_ids"])
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)  # (1,) = [T]
    zero = g.const("zero_1d", np.array([0], np.int64))
    pos = g.op("Slice", [g.const("pos_emb", _f32(emb.pos.weight)), zero, seq_len, zero])
    x = g.op(
        "LayerNormalization",
        [
            g.op("Add", [tok, pos]),
            g.const("emb_ln_w", _f32(emb.norm.weight)),
            g.const("emb_ln_b", _f32(emb.norm.bias)),
        ],
        axis=-1,
        epsilon=eps,
    )
    mask_i32 = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)

    blocks = model.encoder.blocks
    n = model.encoder.num_layers
    for i in range(n):
        blk, p = blocks[i % len(blocks)], f"l{i % len(blocks)}"
        # With [CLS] pooling the last block's output matters at position 0 only.
        x = _block(g, blk, p, x, mask_i32, eps, cls_only=model.pooler is not None and i == n - 1)

    if model.pooler is not None:  # [CLS] (position 0) through the tanh pooler
        cls = g.op("Gather", [x, g.const("idx0", np.array(0, np.int64))], axis=1)
        pooled = g.op("Tanh", [_linear(g, model.pooler, "pooler", cls)])
    else:  # masked mean over real tokens
        m = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
        m3 = g.op("Unsqueeze", [m, g.const("axis_m1", np.array([-1], np.int64))])
        axis1 = g.const("axis_1", np.array([1], np.int64))
        total = g.op("ReduceSum", [g.op("Mul", [x, m3]), axis1], keepdims=0)
        count = g.op("ReduceSum", [m3, axis1], keepdims=0)
        count = g.op("Max", [count, g.const("one", np.array(1.0, np.float32))])
        pooled = g.op("Div", [total, count])
    _linear(g, model.head, "head", pooled, out="logits")  # the graph output "logits"

    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg.num_labels])]
    graph = helper.make_graph(
        g.nodes, "slimtext_fused", inputs, out, g.inits, value_info=g.value_info
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
        producer_name="slimtext",
    )
    proto.ir_version = min(proto.ir_version, 9)  # what current onnxruntime releases accept
    onnx.checker.check_model(proto)
    return proto


def _block(
    g: _Graph, blk: nn.Module, p: str, x: str, mask_i32: str, eps: float, cls_only: bool = False
) -> str:
    """One encoder block on x (B, T, C). `cls_only`: attention still runs over every token, but
    the output projection, residual, LayerNorms and feed-forward run on position 0 only and the
    result is (B, 1, C); about 3/4 of the block's FLOPs are then skipped."""
    attn = blk.attn
    head_dim = getattr(attn, "head_dim", None)
    n_head = getattr(attn, "n_head", None)
    if head_dim is None or n_head is None or not hasattr(attn, "qkv"):
        raise FusedUnsupported(f"attention module {type(attn).__name__} has no fused-qkv layout")
    qkv = attn.qkv
    if isinstance(qkv, _low_rank_type()):  # the low-rank factor first, then Attention on rank r
        x_in, qkv = _linear(g, qkv.a, f"{p}.qkv.a", x), qkv.b
    else:
        x_in = x
    w, b = _weight_bias(qkv)
    width = w.shape[0] // 3
    if width % head_dim:
        raise FusedUnsupported(f"q/k/v width {width} is not a multiple of head_dim {head_dim}")
    heads = width // head_dim  # fewer than config.num_heads after head pruning
    attrs = {"num_heads": heads, "scale": float(head_dim**-0.5)}
    if w.shape[1] != width:  # pruned heads: q/k/v narrower than the input
        attrs["qkv_hidden_sizes"] = [width, width, width]
    a = g.op(
        "Attention",
        [x_in, g.const(f"{p}.qkv.w", np.ascontiguousarray(w.T)),
         g.const(f"{p}.qkv.b", _bias_or_zeros(b, 3 * width)), mask_i32],
        domain=MS,
        **attrs,
    )  # fmt: skip
    if cls_only:
        first = g.const("idx0_1d", np.array([0], np.int64))
        a, x = (g.op("Gather", [t, first], axis=1) for t in (a, x))  # (B, 1, W) and (B, 1, C)
    o, ob = _linear(g, attn.out, f"{p}.attn_out", a, fold_bias=False)
    x = _skip_ln(g, o, x, blk.norm1, ob, f"{p}.ln1", eps)
    h, hb = _linear(g, blk.ffn_in, f"{p}.ffn_in", x, fold_bias=False)
    if hb is None:
        h = g.op("Gelu", [h], domain=MS)
    else:
        h = g.op("BiasGelu", [h, g.const(f"{p}.ffn_in.b", hb)], domain=MS)
    f, fb = _linear(g, blk.ffn_out, f"{p}.ffn_out", h, fold_bias=False)
    return _skip_ln(g, f, x, blk.norm2, fb, f"{p}.ln2", eps)


def _skip_ln(g, y: str, skip: str, norm: nn.LayerNorm, bias, p: str, eps: float) -> str:
    """LayerNorm(y + skip + bias) as two `Add`s and a `LayerNormalization`, not ORT's fused
    `SkipLayerNormalization`: on ORT 1.32's CPU kernels the fused op is the slower one, 31.5 vs
    11.8 us for a (1, 50, 256) input on 2 threads and 1.76 vs 0.43 ms at (1, 3200, 256)
    (one-op graphs); a whole BERT-mini int8 graph runs 1.29x (batch 1) to 1.38x (batch 8) as
    fast without it (BENCHMARKS.md section 5, session 16). The skip is added before the bias:
    ORT's SkipLayerNormFusion matches the bias-first order and would fuse it back (predictor
    sessions also disable that fusion, see `SLOW_FUSIONS`)."""
    y = g.op("Add", [y, skip])
    if bias is not None:
        y = g.op("Add", [y, g.const(f"{p}.bias", bias)])
    w, b = g.const(f"{p}.w", _f32(norm.weight)), g.const(f"{p}.b", _f32(norm.bias))
    return g.op("LayerNormalization", [y, w, b], axis=-1, epsilon=eps)


def _linear(g, mod: nn.Module, p: str, x: str, *, fold_bias: bool = True, out: str | None = None):
    """x @ W^T (+ b). With `fold_bias=False` returns (name, bias) for a fused op to add."""
    if isinstance(mod, _low_rank_type()):
        x = _linear(g, mod.a, f"{p}.a", x)
        return _linear(g, mod.b, f"{p}.b", x, fold_bias=fold_bias, out=out)
    w, b = _weight_bias(mod)
    y = g.op(
        "MatMul",
        [x, g.const(f"{p}.w", np.ascontiguousarray(w.T))],
        out=None if b is not None and fold_bias else out,
    )
    if not fold_bias:
        return y, b
    if b is None:
        return y
    return g.op("Add", [y, g.const(f"{p}.b", b)], out=out)


def _weight_bias(mod: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    if hasattr(mod, "dequantize") and hasattr(mod, "qweight"):  # Int8Linear / Int4Linear
        w = mod.dequantize()
    elif isinstance(mod, nn.Linear):
        w = mod.weight
    else:
        raise FusedUnsupported(f"no fused export for a {type(mod).__name__} layer")
    b = getattr(mod, "bias", None)
    return _f32(w), (None if b is None else _f32(b))


def _embedding_weight(emb: nn.Module) -> np.ndarray:
    if isinstance(emb, nn.Embedding):
        return _f32(emb.weight)
    if hasattr(emb, "qweight") and hasattr(emb, "scale"):  # Int8Embedding: rows * row scale
        return _f32(emb.qweight.float() * emb.scale[:, None])
    raise FusedUnsupported(f"no fused export for a {type(emb).__name__} embedding")


def _bias_or_zeros(b, n: int) -> np.ndarray:
    return b if b is not None else np.zeros(n, np.float32)


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32)


def _low_rank_type():
    from .compress.factorize import LowRankLinear

    return LowRankLinear


class _Graph:
    """Nodes and initializers, with fresh value names."""

    def __init__(self):
        self.nodes, self.inits, self.value_info, self._n = [], [], [], 0
        self._consts: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self._consts:  # a shared block (share_layers) reuses its weights
            self._consts.add(name)
            self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(
        self, kind: str, inputs: list[str], *, out: str | None = None, domain: str = "", **attrs
    ) -> str:
        from onnx import TensorProto, helper

        self._n += 1
        name = out or f"{kind.lower()}_{self._n}"
        self.nodes.append(
            helper.make_node(
                kind, inputs, [name], name=f"n{self._n}_{kind}", domain=domain or None, **attrs
            )
        )
        if domain == MS:
            # onnx's shape inference cannot type contrib ops, and ORT's quantiser needs the
            # input of every MatMul typed: state it (every contrib output here is float32).
            self.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        return name
