"""ONNX export of a model directory, checked against PyTorch before it is trusted.

    export_onnx(model_dir)            -> model_dir/model.onnx   (manifest re-written)
    export_onnx(model_dir, out=path)  -> path
    quantize_onnx(model_dir)          -> model_dir/model.int8.onnx (dynamic int8 weights)

Writing into the model directory adds the new files (and their sidecars) to its manifest.

The graph takes `input_ids` int64 (B, T) and `attention_mask` bool (or int64) (B, T) and returns
`logits` float32 (B, num_labels), with B and T dynamic. A `TransformerClassifier` is written
directly in ONNX Runtime's fused transformer ops (`slimtext.onnx_fused`: one `Attention` and
one `BiasGelu` per layer, as ORT's BERT optimizer would make them);
other models are traced, by the dynamo exporter first and the TorchScript exporter as fallback.
Every file is written under a temporary name, compared with PyTorch on padded batches of several
shapes, optionally optimised for ONNX Runtime (and compared again), and only then renamed into
place, so a failed export never leaves a bad `model.onnx`.
A `<name>.json` sidecar records how it was made and the measured parity.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
import torch

from .artifact import INT8_FILE, ONNX_FILE, ModelDir, read_model_dir
from .fileio import (
    IntegrityError,
    TargetExistsError,
    atomic_write_text,
    file_mode,
    flock,
    read_manifest,
    readable_path,
    update_manifest,
)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("logits",)
EXPORTERS = ("auto", "fused", "dynamo", "torchscript")
# Part of the cache key of on-the-fly exports (infer.py): bump it when the graph an export
# writes changes, so a cached file from an older slimtext is not run in its place.
GRAPH_VERSION = "g5"
# ORT graph fusions that make our graphs slower on ORT's CPU kernels: SkipLayerNormalization
# (onnx_fused._skip_ln), 1.3x slower end to end. Every session slimtext opens leaves them out.
SLOW_FUSIONS = ["SkipLayerNormFusion"]
# (batch, length) shapes the parity check runs; 1 and odd sizes catch shapes specialised at
# export time, the long ones catch a position table traced at a fixed length.
PARITY_SHAPES = ((1, 8), (2, 16), (3, 24), (8, 40), (5, 64), (2, 128))


class ExportError(RuntimeError):
    """The export failed, or its output disagrees with PyTorch beyond tolerance."""


def require_onnxruntime(onnx: bool = False):
    """Import onnxruntime (and with `onnx`, the onnx package that exporting and int8
    quantisation need) or raise an ImportError that says how to install them: a plain
    `pip install onnxruntime` brings no onnx, which failed as a bare "No module named 'onnx'"
    after the output folder was made."""
    for name in ("onnxruntime", "onnx") if onnx else ("onnxruntime",):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(
                f"{name} is not installed ({e}); install the ONNX extra: "
                "pip install 'slimtext[onnx]'"
            ) from None
    import onnxruntime

    return onnxruntime


def _check_export_args(exporter: str, mask_dtype: str, opset: int) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if mask_dtype not in ("bool", "int64"):
        raise ValueError(f"mask_dtype must be 'bool' or 'int64', got {mask_dtype!r}")
    if opset < 17:
        # LayerNormalization (our post-LN blocks) is a single op only from opset 17.
        raise ValueError(f"opset must be >= 17, got {opset}")


def _file_in(out: str | os.PathLike, name: str) -> Path:
    """`out` itself, or `out/name` when `out` is a folder: one that exists, or a path ending in
    a separator (`--out newdir/`), which is created."""
    text = os.fspath(out)
    folder = text.endswith(("/", os.sep)) or Path(text).is_dir()
    return Path(text) / name if folder else Path(text)


def _target(model_dir: Path | None, out: str | os.PathLike | None, name: str) -> tuple[Path, bool]:
    """Where an export goes, and whether that is inside the model directory (whose manifest
    then lists it). Refused before any work: a file that is not an earlier export (a data
    file, the model's own weights), and any other name inside the model directory."""
    if out is None:
        if model_dir is None:
            raise ValueError("pass `out=`: this ModelDir was not read from a directory")
        return model_dir / name, True
    target = _file_in(out, name)
    if model_dir is not None and target.parent.resolve() == model_dir.resolve():
        if target.name == name:  # the default place, spelled out
            return model_dir / name, True
        raise TargetExistsError(
            f"{target}: inside the model directory an export can only be {name} (omit --out)"
        )
    if os.path.lexists(target) and (target.is_dir() or target.suffix != ".onnx"):
        raise TargetExistsError(
            f"{target} exists and is not an ONNX file; refusing to overwrite it (choose another "
            "path)"
        )
    # An earlier export has its sidecar (written last): another tool's .onnx, or any file that
    # merely ends so, has none and is left alone; and so is a .json of that name of another's.
    side = _sidecar(target)
    ours = {"torch", "onnxruntime"} <= _read_sidecar(target).keys()
    if (os.path.lexists(target) or os.path.lexists(side)) and not ours:
        what = target if os.path.lexists(target) else side
        raise TargetExistsError(
            f"{what} exists and is not an earlier slimtext export (no {side.name} of ours beside "
            "it); refusing to overwrite it (choose another path, or delete it)"
        )
    return target, False


def export_onnx(
    model_dir: str | os.PathLike | ModelDir,
    out: str | os.PathLike | None = None,
    *,
    opset: int = 18,
    optimize: bool = True,
    exporter: str = "auto",
    mask_dtype: str = "bool",
    atol: float = 1e-4,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Export a model directory to ONNX and check it against PyTorch; returns the file's path.

    Without `out` the file is `model.onnx` inside the model directory and is added to the
    directory's manifest, so it still verifies on load. Raises `ExportError` when the largest
    absolute logit difference on the parity batches exceeds `atol`.
    """
    _check_export_args(exporter, mask_dtype, opset)
    if not atol >= 0:  # (NaN too) was refused only after the export, as a logit difference
        raise ValueError(f"atol must be a number >= 0, got {atol}")
    require_onnxruntime(onnx=True)
    log = log or (lambda _msg: None)
    md = model_dir if isinstance(model_dir, ModelDir) else read_model_dir(model_dir)
    return _write_export(md, out, ONNX_FILE, log, lambda target, guard: _export_file(
        md, target, opset, optimize, exporter, mask_dtype, atol, log, guard))  # fmt: skip


def _write_export(md: ModelDir, out, name: str, log, work) -> Path:
    """Run `work(target, guard)` for the file `name` of `md` (or `out`), then list it in the
    model directory's manifest when it went there."""
    home = Path(md.meta["path"]) if "path" in md.meta else None
    target, in_model_dir = _target(home, out, name)
    try:  # the model directory's own path too (the default target)
        os.fspath(target.resolve()).encode("utf-8")
    except UnicodeEncodeError:  # ONNX Runtime's optimiser writes by path, and takes UTF-8 only
        raise ValueError(
            f"{target}: the path is not UTF-8; export with --out to a UTF-8 path"
        ) from None
    if in_model_dir and not md.weights_as_read():
        # its manifest would vouch for a graph of other weights than its model.safetensors
        raise ExportError(
            f"{home}: the model in memory is no longer the one saved there (changed after "
            "loading: pruned, quantised or edited); save it to a directory first "
            "(TextClassifier.save, slimtext.artifact.save_model_dir), or export with out=..."
        )
    guard = _still_there(md) if in_model_dir else (lambda: None)
    try:
        work(target, guard)
    except Exception:
        guard()  # a directory replaced mid-export explains the failure better
        raise
    if in_model_dir:
        update_manifest(target.parent, [target.name, _sidecar(target).name])
    log(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return target


def _still_there(md: ModelDir) -> Callable[[], None]:
    """A check that `md`'s directory still holds the weights that were read: a retrain into the
    same path may have swapped another model in, whose manifest must not vouch for this
    model's graph (nor lose its export's temporary files with a traceback)."""
    home = Path(md.meta["path"])
    read = md.meta.get("manifest", {}).get("model.safetensors", {}).get("sha256")

    def check() -> None:
        try:
            now = read_manifest(home)["model.safetensors"]["sha256"]
        except (IntegrityError, KeyError, TypeError):
            now = None
        if read is not None and now != read:
            raise ExportError(
                f"{home} was replaced while exporting (a retrain into the same path?); export again"
            )

    return check


def _export_file(md: ModelDir, target: Path, opset: int, optimize: bool, exporter: str,
                 mask_dtype: str, atol: float, log: Callable[[str], None],
                 guard: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    """`export_onnx`'s work, into exactly `target` (and its sidecar); `guard()` runs just
    before the file is published."""
    target.parent.mkdir(parents=True, exist_ok=True)
    model = md.model.float().cpu().eval()
    max_t = _max_positions(md)
    from .compress.quantize import dense_int8  # int8 model directories export their float math

    with _temp_files(target, 2) as (raw, opt), dense_int8():
        used = _export(model, raw, opset, exporter, mask_dtype, max_t, log)
        diff = onnx_parity(raw, model, md.config.vocab_size, max_t, mask_dtype)
        log(f"parity ({used} exporter): max |logits diff| = {diff:.2e}")
        if not diff <= atol:  # also catches NaN
            raise ExportError(f"ONNX output differs from PyTorch by {diff:.2e} > atol={atol}")
        final = raw
        if optimize:
            optimize_for_ort(raw, opt)
            diff = onnx_parity(opt, model, md.config.vocab_size, max_t, mask_dtype)
            log(f"parity (ORT-optimised graph): max |logits diff| = {diff:.2e}")
            if not diff <= atol:
                raise ExportError(f"optimised graph differs from PyTorch by {diff:.2e} > {atol}")
            final = opt
        guard()
        _publish(final, target)
    _write_sidecar(
        target,
        md,
        exporter=used,
        opset=opset,
        optimized=optimize,
        mask_dtype=mask_dtype,
        max_abs_diff=diff,
        atol=atol,
    )


def quantize_onnx(
    model_dir: str | os.PathLike | ModelDir,
    out: str | os.PathLike | None = None,
    *,
    source: str | os.PathLike | None = None,
    exporter: str = "auto",
    mask_dtype: str | None = None,
    opset: int | None = None,
    min_agreement: float = 0.95,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Dynamic int8 quantisation (int8 weights, activations quantised per batch at run time).

    Starts from `source`, or by default from a fresh plain export with `mask_dtype` and `opset`
    (when not given: those of the directory's `model.onnx` if it has one, else bool and 18, the
    `export_onnx` defaults, so the int8 file takes the same inputs as the fp32 one). Writes
    `model.int8.onnx` into the model directory (or `out`: a file, or a folder to put it in).
    Batch and length stay dynamic: dynamic quantisation only rewrites MatMul/Gemm weights, never
    the input shapes. Exact parity is not expected, so the check is that the predicted class
    agrees with PyTorch's on at least `min_agreement` of the random parity rows.
    """
    if mask_dtype not in (None, "bool", "int64"):
        raise ValueError(f"mask_dtype must be 'bool' or 'int64', got {mask_dtype!r}")
    if source is not None:
        made = _read_sidecar(Path(source))
        if mask_dtype is not None and mask_dtype != made.get("mask_dtype", "bool"):
            # The source graph's inputs are fixed; quantisation cannot change the mask type.
            raise ValueError(
                f"{source} takes a {made.get('mask_dtype', 'bool')} mask, not {mask_dtype}"
            )
    require_onnxruntime(onnx=True)
    log = log or (lambda _msg: None)
    md = model_dir if isinstance(model_dir, ModelDir) else read_model_dir(model_dir)
    home = Path(md.meta["path"]) if "path" in md.meta else None
    if source is None:
        fp32_made = _read_sidecar(home / ONNX_FILE) if home is not None else {}
        mask_dtype = mask_dtype or fp32_made.get("mask_dtype", "bool")
        opset = opset or fp32_made.get("opset", 18)
        _check_export_args(exporter, mask_dtype, opset)
    return _write_export(md, out, INT8_FILE, log, lambda target, guard: _quantize_file(
        md, target, source, exporter, mask_dtype, opset, min_agreement, log, guard))  # fmt: skip


def _quantize_file(md, target, source, exporter, mask_dtype, opset, min_agreement, log,
                   guard) -> None:  # fmt: skip
    """`quantize_onnx`'s work, into exactly `target` (and its sidecar)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    model = md.model.float().cpu().eval()
    max_t = _max_positions(md)
    with _temp_files(target, 2) as (fp32, tmp):
        if source is None:
            # Quantise a plain export: ORT's quantiser cannot type the com.microsoft fused ops an
            # ORT-optimised graph contains. Sessions re-apply the fusions when they load it.
            _export_file(md, fp32, opset, False, exporter, mask_dtype, 1e-4, log)
            src = fp32
        else:
            src = Path(source)
        made = _read_sidecar(src)
        mask_dtype, opset = made.get("mask_dtype", "bool"), made.get("opset")
        # MatMul, the fused graph's Attention (-> QAttention, int8 q/k/v projection inside the
        # attention kernel) and the embedding tables' Gather (int8 rows, dequantized after the
        # lookup): the tables are most of a small model's bytes. Session 17 (BENCHMARKS.md §5):
        # files 19.8 -> 7.5 MB (BERT-mini) and 273 -> 68 MB (2^20 word pairs), test accuracy
        # unchanged on AG News and IMDB, and no slower (1.06x at batch 1, 1.02x at 64).
        with _quiet_preprocess_hint():
            quantize_dynamic(src, tmp, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Attention", "Gather"])  # fmt: skip
        diff, agree = _int8_check(tmp, model, md.config.vocab_size, max_t, mask_dtype)
        log(f"int8 vs PyTorch: max |logits diff| = {diff:.3f}, argmax agreement = {agree:.3f}")
        if agree < min_agreement:
            raise ExportError(f"int8 model agrees with PyTorch on only {agree:.1%} of rows")
        guard()
        _publish(tmp, target)
    _write_sidecar(
        target,
        md,
        quantized="dynamic-int8",
        source=Path(source).name if source else "fresh export",
        mask_dtype=mask_dtype,
        opset=opset,
        max_abs_diff=diff,
        argmax_agreement=agree,
    )


def optimize_for_ort(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Let ONNX Runtime apply its graph fusions and save the result.

    EXTENDED, not ALL, for the saved file: ALL adds layout rewrites tuned to this CPU that ORT
    warns make the file non-portable; sessions still run at ALL when they load it.
    """
    ort = require_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(
        str(src), so, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS
    )


def onnx_parity(
    path: str | os.PathLike,
    model: torch.nn.Module,
    vocab_size: int,
    max_t: int,
    mask_dtype: str = "bool",
    shapes=PARITY_SHAPES,
) -> float:
    """Largest absolute logit difference between the ONNX file and `model` on padded batches."""
    worst = 0.0
    for ref, out in _paired_outputs(path, model, vocab_size, max_t, mask_dtype, shapes):
        worst = max(worst, float(np.abs(ref - out).max()))
    return worst


@contextlib.contextmanager
def _quiet_preprocess_hint():
    """quantize_dynamic logs "Please consider to run pre-processing before quantization" on the
    root logger at every call; it concerns static quantisation of CNNs, and was the one line
    of noise in every `eval`/`predict` that quantised into the cache."""
    import logging

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    root, drop = logging.getLogger(), Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _int8_check(path, model, vocab_size, max_t, mask_dtype) -> tuple[float, float]:
    pairs = list(_paired_outputs(path, model, vocab_size, max_t, mask_dtype, PARITY_SHAPES))
    ref = np.concatenate([r for r, _ in pairs])
    out = np.concatenate([o for _, o in pairs])
    return float(np.abs(ref - out).max()), float((ref.argmax(1) == out.argmax(1)).mean())


def _paired_outputs(path, model, vocab_size, max_t, mask_dtype, shapes):
    ort = require_onnxruntime()
    # the graph as slimtext's sessions run it (without the fusions they leave out)
    with readable_path(path) as name:
        sess = ort.InferenceSession(
            name, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS
        )
    g = torch.Generator().manual_seed(0)
    for b, t in shapes:
        t = min(t, max_t)
        ids, mask = _example(b, t, vocab_size, g)
        with torch.inference_mode():
            ref = model(ids, mask).float().numpy()
        feed = {"input_ids": ids.numpy(), "attention_mask": _np_mask(mask.numpy(), mask_dtype)}
        yield ref, sess.run(None, feed)[0]


def _example(b: int, t: int, vocab_size: int, g: torch.Generator):
    """Random ids with real padding: row j keeps a different number of tokens (at least 1)."""
    ids = torch.randint(1, vocab_size, (b, t), generator=g)
    keep = torch.randint(1, t + 1, (b,), generator=g)
    keep[0] = t  # one full row, so the batch's length is really t
    mask = torch.arange(t)[None, :] < keep[:, None]  # (B, T) bool
    return ids.masked_fill(~mask, 0), mask


def _np_mask(mask: np.ndarray, mask_dtype: str) -> np.ndarray:
    return mask.astype(np.int64) if mask_dtype == "int64" else mask.astype(bool)


def _export(model, path: Path, opset, exporter, mask_dtype, max_t, log) -> str:
    if exporter in ("auto", "fused"):
        from .onnx_fused import FusedUnsupported, build_fused

        try:
            proto = build_fused(model, mask_dtype=mask_dtype, opset=opset)
        except FusedUnsupported as e:
            if exporter == "fused":
                raise ExportError(f"fused export is not possible: {e}") from e
            log(f"no fused graph ({e}); tracing the model instead")
        else:
            import onnx

            onnx.save(proto, str(path))
            return "fused"
    g = torch.Generator().manual_seed(0)
    # Batch 2 and length 16 as examples: sizes 0 and 1 would be specialised by the tracer.
    ids, mask = _example(2, min(16, max_t), model.config.vocab_size, g)
    args = (ids, mask.long() if mask_dtype == "int64" else mask)
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(model, args, path, opset, max_t)
            return "dynamo"
        except Exception as e:  # the dynamo exporter raises many types; any means "fall back"
            if exporter == "dynamo":
                raise ExportError(f"dynamo export failed: {e}") from e
            log(f"dynamo export failed ({type(e).__name__}: {str(e)[:200]}); using TorchScript")
    _export_torchscript(model, args, path, opset)
    return "torchscript"


def _export_dynamo(model, args, path: Path, opset: int, max_t: int) -> None:
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("seq", max=max_t)
    with warnings.catch_warnings(), _quiet_torch_logs():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            optimize=True,
            external_data=False,  # one self-contained file, so the atomic rename moves it all
            verbose=False,
        )
    import onnx

    # Below opset 18 the exporter converts its opset-18 graph down with onnx's C API, which
    # keeps Split's `num_outputs` (an opset 18 attribute): ONNX Runtime then refused the file
    # inside the parity check, a traceback. Checked here, it is a dynamo failure like any other.
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        hint = " (try --opset 18, or --exporter torchscript)" if opset < 18 else ""
        first = (str(e).strip().splitlines() or ["invalid graph"])[0]
        raise ExportError(f"the graph it wrote is not valid ONNX: {first}{hint}") from None


def _export_torchscript(model, args, path: Path, opset: int) -> None:
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={**axes, "logits": {0: "batch"}},
            do_constant_folding=True,
        )


@contextlib.contextmanager
def _quiet_torch_logs():
    # The dynamo exporter logs missing torchvision ops etc. at WARNING through `logging`.
    import logging

    lg = logging.getLogger("torch.onnx")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


@contextlib.contextmanager
def _temp_files(target: Path, n: int):
    """`n` temporary paths next to `target` (same filesystem, so os.replace is atomic), each
    locked while this export runs, so that a later export can tell them from a killed one's."""
    _sweep_temp_files(target)
    paths, fds = [], []
    try:
        for _ in range(n):
            try:
                fd, p = tempfile.mkstemp(
                    prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
                )
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
                # it named our temporary file, and not the way out
                raise ExportError(
                    f"cannot write {target.name} into {target.parent} ({e.strerror}): export "
                    "to a writable place with --out (out= in Python)"
                ) from None
            fds.append(fd)
            flock(fd, wait=False)
            paths.append(Path(p))
        yield paths
    finally:
        for p in paths:  # and any sidecar an intermediate export wrote next to one
            for q in (p, p.with_name(p.name + ".json")):
                with contextlib.suppress(FileNotFoundError):
                    q.unlink()
        for fd in fds:
            os.close(fd)


_ABANDONED_AFTER_S = 600  # and unlocked: a killed export's, not one still being written


def _sweep_temp_files(target: Path) -> None:
    """Remove what exports of `target` killed mid-way (SIGKILL, out of memory) left beside it:
    a model-sized `.model.onnx.XXXX.tmp` each, which nothing else ever removed."""
    now = time.time()
    for p in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            old = now - os.fstat(fd).st_mtime > _ABANDONED_AFTER_S
            if old and flock(fd, wait=False):  # nobody holds it: its writer is gone
                for q in (p, p.with_name(p.name + ".json")):
                    with contextlib.suppress(FileNotFoundError):
                        q.unlink()
        except OSError:  # a filesystem without locks, or one we may not write: leave it
            pass
        finally:
            os.close(fd)


def _publish(tmp: Path, target: Path) -> None:
    # mkstemp files are 0600; give the published file the permissions a plain write would have.
    os.chmod(tmp, file_mode())
    os.replace(tmp, target)


def _max_positions(md: ModelDir) -> int:
    # Position table size bounds T; the tokenizer never produces more than max_length ids.
    return int(md.config.max_length)


def _write_sidecar(target: Path, md: ModelDir, **info) -> None:
    import onnxruntime

    info.update(torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    info["inputs"] = _how_to_feed(md, info.get("mask_dtype", "bool"))
    atomic_write_text(_sidecar(target), json.dumps(info, indent=2) + "\n")


def _how_to_feed(md: ModelDir, mask_dtype: str) -> dict:
    """What a program that runs the graph without slimtext must do to get slimtext's answers
    (README, "Running an export without slimtext"), kept with the graph."""
    return {
        "tokenizer": "the model directory's tokenizer.json, with encode_special_tokens = true "
        "(a [SEP] in a text is text, as slimtext reads it; the file cannot carry that setting) "
        "and its own padding and truncation off, no_padding() and no_truncation() (a "
        "tokenizer.json given to train keeps those it came with; slimtext cuts and pads itself)",
        "input_ids": "int64 (batch, seq), as the tokenizer gives them, [CLS] ... [SEP] included",
        "attention_mask": f"{mask_dtype} (batch, seq): true (1) on real tokens",
        "padding": "right",
        "pad_id": md.tokenizer.pad_id,
        "max_length": md.max_length,  # seq longer than this: cut, or read as long_text says
        "long_text": md.long_text,
        "empty_texts": "refused (empty, or only whitespace or invisible characters)",
        "logits": "(batch, labels), columns in labels' order; softmax gives the probabilities",
        "labels": list(md.labels),
    }


def _sidecar(target: Path) -> Path:
    return Path(target).with_name(Path(target).name + ".json")


def _read_sidecar(target: Path) -> dict:
    try:
        info = json.loads(_sidecar(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
