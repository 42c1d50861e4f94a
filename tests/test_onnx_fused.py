"""The fused ONNX graph (ORT `Attention` / `BiasGelu`) computes what
the PyTorch model computes, for every shape of TransformerClassifier slimtext can produce."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from slimtext.compress import Int4WeightOnly, Int8Dynamic, LowRank, factorize_, quantize_  # noqa: E402
from slimtext.compress.prune import keep_heads_, keep_neurons_  # noqa: E402
from slimtext.compress.quantize import dense_int8  # noqa: E402
from slimtext.export import ExportError, export_onnx, onnx_parity, quantize_onnx  # noqa: E402
from slimtext.models import build_model  # noqa: E402
from slimtext.models.config import ModelConfig  # noqa: E402
from slimtext.onnx_fused import FusedUnsupported, build_fused  # noqa: E402

ATOL = 1e-4


def _model(seed: int = 0, **kw) -> torch.nn.Module:
    cfg = dict(vocab_size=300, num_labels=3, hidden_size=32, num_layers=2, num_heads=4,
               ffn_size=48, max_length=40)  # fmt: skip
    cfg.update(kw)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**cfg)).eval()
    with torch.no_grad():  # BERT init zeroes biases and sets LayerNorm to 1/0: randomise all
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def _shrink_heads_and_ffn(m):
    keep_heads_(m.encoder.blocks[0], [0, 2, 3])  # 3 of 4 heads: q/k/v narrower than hidden
    keep_neurons_(m.encoder.blocks[1], list(range(0, 48, 2)))
    return m


VARIANTS = {
    "mean": lambda: _model(),
    "cls": lambda: _model(pooling="cls"),
    "shared-layers": lambda: _model(share_layers=True, num_layers=3),
    "pruned-heads-ffn": lambda: _shrink_heads_and_ffn(_model()),
    "low-rank": lambda: _lowrank(_model()),
    "int8": lambda: _quant(_model(), Int8Dynamic()),
    "int4": lambda: _quant(_model(pooling="cls"), Int4WeightOnly(16)),
}


def _lowrank(m):
    factorize_(m, LowRank(energy=0.9, only_if_smaller=False))
    return m


def _quant(m, cfg):
    quantize_(m, cfg)
    return m


@pytest.mark.parametrize("mask_dtype", ["bool", "int64"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_graph_matches_pytorch_on_padded_batches(variant, mask_dtype, tmp_path):
    model = VARIANTS[variant]().eval()  # modules swapped in by compression start in train mode
    path = tmp_path / "m.onnx"
    with dense_int8():  # int8 layers compute with their dequantized weights, as exported
        onnx.save(build_fused(model, mask_dtype=mask_dtype), path)
        diff = onnx_parity(path, model, 300, 40, mask_dtype)  # padded rows of many lengths
    assert diff <= ATOL, f"{variant}: max |diff| {diff:.2e}"


def test_padding_never_changes_fused_logits(tmp_path):
    model = _model(pooling="cls")
    path = tmp_path / "m.onnx"
    onnx.save(build_fused(model), path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 300, (3, 12), generator=g).numpy()
    mask = np.ones((3, 12), bool)
    mask[1, 7:] = mask[2, 3:] = False
    ids[~mask] = 0
    out = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    padded = sess.run(
        None,
        {
            "input_ids": np.pad(ids, ((0, 0), (0, 9))),
            "attention_mask": np.pad(mask, ((0, 0), (0, 9))),
        },
    )[0]
    np.testing.assert_allclose(padded, out, atol=1e-5, rtol=0)
    alone = sess.run(None, {"input_ids": ids[2:, :3], "attention_mask": mask[2:, :3]})[0]
    np.testing.assert_allclose(alone[0], out[2], atol=1e-5, rtol=0)


def test_graph_is_made_of_fused_ops_and_int8_uses_qattention(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    path = export_onnx(d, optimize=False)
    info = json.loads((d / "model.onnx.json").read_text())
    assert info["exporter"] == "fused" and info["max_abs_diff"] <= ATOL
    ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    layers = json.loads((d / "config.json").read_text())["model"]["num_layers"]
    # residual adds as Add + LayerNormalization (plus the embeddings' LayerNormalization):
    # ORT's SkipLayerNormalization kernel is the slower one on CPU (onnx_fused._skip_ln)
    assert ops["Attention"] == layers and ops["LayerNormalization"] == 2 * layers + 1
    assert "SkipLayerNormalization" not in ops
    assert ops["BiasGelu"] == layers and "Softmax" not in ops and "Transpose" not in ops
    q = onnx.load(quantize_onnx(d))
    qops = Counter(n.op_type for n in q.graph.node)
    assert qops["QAttention"] == layers and "Attention" not in qops
    assert qops["MatMulInteger"] >= 2 * layers  # attn out, ffn in/out (and the head)


def test_the_saved_optimised_graph_keeps_the_residual_adds_unfused(tiny_model_dir, tmp_path):
    # `export --optimize` saves ORT's optimised graph: it must keep Add + LayerNormalization
    # (ORT's SkipLayerNormFusion is left out, export.SLOW_FUSIONS), and still match PyTorch.
    import shutil

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    path = export_onnx(d, optimize=True)
    ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert "SkipLayerNormalization" not in ops and ops["LayerNormalization"] >= 2, ops
    assert json.loads((d / "model.onnx.json").read_text())["max_abs_diff"] <= ATOL


def test_other_models_are_traced_and_fused_only_refuses_them(tmp_path):
    from slimtext.models.attention_pool import AttentionPoolingClassifier

    cfg = ModelConfig(vocab_size=50, num_labels=2, arch="attention", num_layers=0, max_length=16)
    model = build_model(cfg)
    assert isinstance(model, AttentionPoolingClassifier)
    with pytest.raises(FusedUnsupported, match="not a TransformerClassifier"):
        build_fused(model)


def test_exporter_fused_on_an_attention_model_dir_is_an_export_error(toy_data, tmp_path):
    from slimtext.api import TextClassifier

    clf = TextClassifier(model="attention", vocab_size=200, hidden_size=16, max_length=24,
                         epochs=1, batch_size=16, verbose=False).fit(toy_data)  # fmt: skip
    d = tmp_path / "attn"
    clf.save(d)
    with pytest.raises(ExportError, match="fused export is not possible"):
        export_onnx(d, exporter="fused")
    msgs: list[str] = []
    export_onnx(d, exporter="auto", log=msgs.append)  # falls back to tracing, parity-checked
    assert any("no fused graph" in m for m in msgs)
    assert json.loads((d / "model.onnx.json").read_text())["exporter"] in ("dynamo", "torchscript")
