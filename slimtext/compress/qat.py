"""Quantization-aware training: fine-tune with fake quantization, then store the int8 format of
`quantize.py`, so `slimtext eval/predict` load the result like any post-training int8 model.

    result, rec = qat_(model, QAT(), train, valid, TrainConfig(epochs=1),
                       label_names=labels, pad_id=pad)          # prepare -> fit -> convert

or in steps, torchao-style:

    prepare_qat_(model, QAT())     # nn.Linear -> torchao FakeQuantizedLinear (and embeddings)
    fit(model, ...)                # any loss: cross-entropy, distillation
    rec = convert_qat_(model, QAT())

Use it when post-training quantization loses accuracy: the weights learn to sit where int8
rounding costs the loss least (Jacob et al. 2018), gradients pass the rounding unchanged
(straight-through estimator).

The fake quantization is torchao's (`torchao.quantization.qat`), configured to match what
`Int8Linear` computes at inference with fbgemm's `quantized::linear_dynamic`:

- weights: int8, one symmetric scale per output channel
  (`IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)`);
- activations: one asymmetric (scale, zero point) per call over the *whole* input, 7-bit
  (fbgemm's `reduce_range=True`: quint8 values 0..127). torchao's config has per-token but no
  per-tensor granularity (it rejects `PerTensor()`), so `PerTensorFakeQuantizer` hands torchao's
  per-token `IntxFakeQuantizer` the input viewed as a single token; `torch.uint7` gives 0..127.

torchao's own convert step (`QATConfig(base_config, step="convert")`) would produce its tensor
subclasses, which safetensors cannot store and which run slower than fbgemm here (see
quantize.py), so `convert_qat_` converts to our `Int8Linear` / `Int8Embedding` itself, taking
the int8 values and scales from the trained fake quantizers: the stored model computes with
exactly the weights the fine-tuning saw. (torchao's symmetric int8 scale is max|w| / 127.5 with
values in [-128, 127], a hair finer than PTQ's max|w| / 127; fbgemm takes both.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._util import record, recorded, set_module
from .quantize import Int8Embedding, Int8Linear, _targets

QAT_METHODS = ("int8-dynamic", "int8-weight")


@dataclass
class QAT:
    """Fake-quantized fine-tuning that ends in `method`'s stored int8 format."""

    method: str = "int8-dynamic"  # int8 weights + int8 activations; "int8-weight": weights only
    embeddings: bool = True  # token embeddings as int8 rows, fake-quantized while training
    skip: tuple[str, ...] = ()  # module names kept in float
    version: int = 1

    def __post_init__(self) -> None:
        self.skip = tuple(self.skip)
        if self.method not in QAT_METHODS:
            raise ValueError(f"QAT method must be one of {QAT_METHODS}, got {self.method!r}")


class PerTensorFakeQuantizer(nn.Module):
    """One (scale, zero point) for the whole input, as fbgemm's dynamic linear computes it:
    torchao's per-token fake quantizer applied to the input viewed as one token."""

    def __init__(self, config) -> None:
        super().__init__()
        from torchao.quantization.qat import IntxFakeQuantizer

        self.inner = IntxFakeQuantizer(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.reshape(1, -1)).view_as(x)


def _configs(config: QAT):
    from torchao.quantization.qat import IntxFakeQuantizeConfig

    weight = IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)
    act = None
    if config.method == "int8-dynamic":
        act = IntxFakeQuantizeConfig(torch.uint7, "per_token", is_symmetric=False)
    return weight, act


def prepare_qat_(model: nn.Module, config: QAT) -> nn.Module:
    """Swap the layers `quantize_` would quantize for torchao's fake-quantized ones, in place."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise ImportError(
            "quantization-aware training needs torchao: pip install 'slimtext[quant]'"
        ) from None
    from torchao.quantization import quantize_ as ao_quantize_
    from torchao.quantization.qat import FakeQuantizedLinear, QATConfig

    weight, act = _configs(config)
    # The n-gram table stays in float: a fake-quantized table computes its whole weight each
    # step, which defeats its sparse updates (train/trainer.py); PTQ can still take it to int8.
    names = [n for n in _targets(model, config) if not n.endswith("ngram")]
    linears = {n for n in names if type(model.get_submodule(n)) is nn.Linear}
    embeddings = set(names) - linears
    if linears:
        # The activation config goes in as weights-only here: torchao would build a per-token
        # quantizer; ours (per-tensor) is put in below.
        ao_quantize_(model, QATConfig(weight_config=weight, step="prepare"),
                     filter_fn=lambda m, fqn: fqn in linears)  # fmt: skip
    if embeddings:  # embeddings take no activation quantizer (a lookup has no input to round)
        ao_quantize_(model, QATConfig(weight_config=weight, step="prepare"),
                     filter_fn=lambda m, fqn: fqn in embeddings)  # fmt: skip
    if act is not None:
        for n in linears:
            m = model.get_submodule(n)
            assert isinstance(m, FakeQuantizedLinear), n
            m.activation_fake_quantizer = PerTensorFakeQuantizer(act)
    return model


@torch.no_grad()
def _int8_from_fake(fq, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, per-row scale) of exactly the weight the fake quantizer produces."""
    wq = fq(weight.detach().float().cpu())
    scale = fq.scale.detach().float().reshape(-1).cpu()
    # wq = q * scale exactly, so dividing back recovers q without a rounding doubt.
    q = torch.round(wq / scale[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


def convert_qat_(model: nn.Module, config: QAT, **extra) -> dict:
    """Replace the fake-quantized layers by `Int8Linear` / `Int8Embedding` in place (CPU,
    inference); returns the `compression` record (`quantize`, so loading needs nothing new)."""
    from torchao.quantization.qat import FakeQuantizedEmbedding, FakeQuantizedLinear

    model.cpu().eval()
    done: dict[str, str] = {}
    after: list[str] = []  # rounded after training, not trained fake-quantized
    for name, m in list(model.named_modules()):
        if isinstance(m, FakeQuantizedLinear):
            new = Int8Linear(m.in_features, m.out_features, m.bias is not None,
                             dynamic=config.method == "int8-dynamic")  # fmt: skip
            q, s = _int8_from_fake(m.weight_fake_quantizer, m.weight)
            if m.bias is not None:
                new.bias.copy_(m.bias.detach().float())
        elif isinstance(m, FakeQuantizedEmbedding):
            new = Int8Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx)
            q, s = _int8_from_fake(m.weight_fake_quantizer, m.weight)
        elif type(m) is nn.Embedding and name.endswith("ngram") and name in _targets(model, config):
            # Trained in float (see prepare_qat_), rounded to int8 rows after training as
            # post-training quantization would: like the token table, it is most of the bytes.
            set_module(model, name, Int8Embedding.from_embedding(m))
            done[name] = "Int8Embedding"
            after.append(name)
            continue
        else:
            continue
        new.qweight.copy_(q)
        new.scale.copy_(s)
        set_module(model, name, new)
        done[name] = type(new).__name__
    if not done:
        raise ValueError("convert_qat_: no fake-quantized layers (call prepare_qat_ first)")
    extra = {**extra, "post_training": after} if after else extra
    return recorded(model, record("quantize", config, modules=done, qat=True, **extra))


def qat_(
    model: nn.Module,
    config: QAT,
    train,
    valid,
    train_config,
    *,
    label_names: Sequence[str],
    pad_id: int,
    loss_fn: Callable | None = None,
    keep_zeros: bool = True,
    run_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[object, dict]:
    """Prepare, fine-tune through `fit` (its precision, schedule, keep-best on the
    fake-quantized validation accuracy), convert. Returns (TrainResult, record).

    `keep_zeros`: Linear weights that are exactly zero (an earlier pruning step: magnitude or
    2:4) are held at zero while fine-tuning, so the sparsity survives into the int8 weights."""
    from ..train.trainer import fit
    from .prune import _MaskHooks

    prepare_qat_(model, config)
    hooks = None
    if keep_zeros:
        masks = [(m, m.weight.detach() != 0) for m in model.modules()
                 if isinstance(m, nn.Linear) and not bool(m.weight.detach().all())]  # fmt: skip
        hooks = _MaskHooks(masks) if masks else None
    try:
        result = fit(
            model, train, valid, train_config, label_names=label_names, pad_id=pad_id,
            loss_fn=loss_fn, run_dir=run_dir, progress=progress,
        )  # fmt: skip
    finally:
        if hooks is not None:
            hooks.remove()
    return result, convert_qat_(model, config, qat_steps=result.steps)
