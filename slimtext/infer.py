"""Predictor: a loaded model directory that turns texts into labels and probabilities.

Texts are tokenized once, batched by length (so short texts are not padded to long ones) and the
results are returned in input order. The forward pass runs on one of several backends, all fed
the same padded (input_ids, attention_mask) batches. The torch and compile backends run a
`TransformerClassifier` through `forward_packed` when a batch is more than PACK_BELOW_FILL
padding: its linear layers see only the real tokens (padding costs attention only); a batch of
nearly equal lengths runs `forward` as it is (packing's gathers would cost more than the padding
they skip). With [CLS] pooling the last block only computes [CLS] either way; the fused ONNX
graph (onnxruntime backends) does that too.

    torch        the eager model
    torch-bf16   the eager model under bfloat16 autocast (matmuls in bf16, LayerNorm and softmax
                 in fp32): several times the throughput of fp32 at batch 64 on CPUs with AMX or
                 AVX512-BF16, slow on CPUs without (emulated); probabilities move by ~1e-2
    compile      `torch.compile`, never recompiling for a new length. A `TransformerClassifier`
                 compiles with batch, length and packed-token axes dynamic: four graphs in all
                 (`forward` at batch 1, which dynamo always specialises, and at batch >= 2;
                 `forward_packed` on ragged batches, and on those whose attention runs in
                 length groups), lengths padded to a multiple of 8. Other models pad lengths
                 up to a few buckets
                 (16, 32, 48, 64, 80, ..., max_length) with the batch axis dynamic: at most
                 2 x buckets graphs
    compile-bf16 `compile` under bfloat16 autocast with inductor's weight freezing (weights
                 folded in as constants and pre-packed for oneDNN's bf16 kernels): the fastest
                 batch backend on CPUs with AMX or AVX512-BF16 (1.4x torch-bf16 at batch 64 on
                 both machines measured); same ~1e-2 change in probabilities as torch-bf16
    onnxruntime  an InferenceSession on the directory's `model.onnx` (exported on the fly into a
                 cache when the directory has none)
    onnxruntime-int8
                 the same on the directory's `model.int8.onnx` (dynamic int8; quantised into the
                 cache when the directory has none)
    auto         times each available backend once at load on a synthetic batch of mixed
                 lengths and keeps the fastest; `pred.backend` says which,
                 `pred.backend_timings` shows the race.
                 torch-bf16 joins the race where the device computes bf16 natively
                 (`native_bf16`), int8 only when the directory ships `model.int8.onnx`
                 (`slimtext export --int8`). Either wins only when it beats the fastest fp32
                 backend by LOW_PRECISION_MARGIN: both change predictions a little, and int8 is
                 often slower on CPUs without VNNI/AMX, so they have to earn their place.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from .artifact import INT8_FILE, ModelDir, read_model_dir, weights_state
from .data.batching import length_sorted_batches, pad_rows
from .data.dataset import check_texts
from .tokenizer import check_long_text, pool_windows, row_lengths

BACKENDS = ("torch", "torch-bf16", "compile", "compile-bf16", "onnxruntime", "onnxruntime-int8",
            "auto")  # fmt: skip
# What `auto` races by default. `compile` is left out: it costs seconds per length bucket at load
# (and a C++ toolchain), which an implicit choice should not spend; pass candidates to include it.
# `torch-bf16` is raced only where bf16 is native (emulated it is slower than fp32), and
# `onnxruntime-int8` only when the directory already has `model.int8.onnx` (quantising at load
# would cost an export and a parity check). On an AMX CPU torch-bf16 serves batches of 64 at
# 2.2x torch and 2.7x onnxruntime-int8 in arrival order (BENCHMARKS.md §5, session 8).
AUTO_CANDIDATES = ("torch", "torch-bf16", "onnxruntime", "onnxruntime-int8")
# Backends whose predictions differ a little from the fp32 model's (bf16 ~1e-2 in probabilities,
# dynamic int8 more). `auto` picks one only when it beats the fastest fp32 backend by
# LOW_PRECISION_MARGIN: a 1-2% win is within timing noise and not worth the change.
LOW_PRECISION = ("torch-bf16", "compile-bf16", "onnxruntime-int8")
LOW_PRECISION_MARGIN = 0.05

# A runner maps one padded batch, (input_ids int64, mask bool) numpy arrays, to float32 logits.
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _made_again(model_dir: ModelDir, args: dict) -> Predictor:
    """A pickled or copied Predictor (see `Predictor.__reduce__`)."""
    return Predictor(model_dir, **args)


class Predictor:
    """`predict(texts) -> labels`, `predict_proba(texts) -> (N, C) array`, over one backend."""

    def __init__(
        self,
        model_dir: ModelDir,
        backend: str = "torch",
        device: str = "cpu",
        batch_size: int = 64,
        *,
        onnx_path: str | os.PathLike | None = None,
        compile_backend: str | Callable = "inductor",
        candidates: Sequence[str] = AUTO_CANDIDATES,
        warmup: bool = True,
        long_text: str | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = model_dir
        # How it was made (TextClassifier's pickling makes it again from these): the arguments
        # as given, `onnx_path` the caller's file or None.
        self.made_with = dict(device=device, batch_size=batch_size, onnx_path=onnx_path,
                              compile_backend=compile_backend, candidates=tuple(candidates),
                              warmup=warmup, long_text=long_text)  # fmt: skip
        if (model_dir.meta.get("train") or {}).get("pretrain"):
            where = model_dir.meta.get("path", "this model directory")
            warnings.warn(
                f"{where} is a pretrained encoder: its classification head is an untrained "
                f"placeholder, so its labels mean nothing; fine-tune it first (slimtext train "
                f"--init {where})",
                stacklevel=2,
            )
        from .train.precision import resolve_device  # "auto", or a clear error for no CUDA

        self.device = resolve_device(device)
        if backend.endswith("bf16") and not native_bf16(self.device):
            # Asked by name it used to run silently, ~10x slower than `torch` on an AVX2 CPU
            # (emulated bf16); `auto` leaves it out for that reason, so say it here too.
            cpu = self.device.type == "cpu"
            what = "CPU has no AVX512-BF16 or AMX" if cpu else "GPU has no bf16"
            warnings.warn(
                f"backend {backend}: this {what}, so bf16 is emulated: several times slower "
                "than the fp32 backends (torch, onnxruntime)",
                stacklevel=2,
            )
        self.batch_size = batch_size
        as_read = model_dir.weights_as_read()
        self.model = model_dir.model.to(self.device).eval()
        if as_read:  # moved to the GPU: new storage, the same weights
            model_dir.read_state = weights_state(self.model)
        # How texts longer than max_length are read: as trained unless overridden.
        self.long_text = check_long_text(long_text or model_dir.long_text)
        self.buckets = length_buckets(_max_len(model_dir))
        self.backend_timings: dict[str, float] = {}  # ms per synthetic batch, filled by "auto"
        self.backend_errors: dict[str, str] = {}  # why "auto" left a candidate out of the race
        self._onnx_path = onnx_path
        self._compile_backend = compile_backend
        self._runner_name = backend
        self.onnx_path: Path | None = None  # the file the onnxruntime backend runs
        if backend == "auto":
            backend = self._race(candidates)
        else:
            self._runner = self._make_runner(backend)
            if warmup:
                self._run_synthetic(min(batch_size, 8))
        self.backend = backend

    def __reduce__(self):
        # The runner is a closure over this predictor (or a compiled graph, an ONNX session):
        # a copy is made again from its model directory, as this one was, on the backend `auto`
        # chose. Pickling failed ("Can't pickle local object"), and a deep copy kept the
        # original's runner, predicting with the original's model whatever was done to its own.
        return _made_again, (self.model_dir, {**self.made_with, "backend": self.backend})

    def auto_notes(self) -> list[str]:
        """What `auto` picked, and each candidate it had to leave out and why (an ONNX cache it
        cannot write, a failed export), for a command to say: [] for a backend asked by name.
        One left out because its extra is not installed is the user's choice, not said."""
        if not self.backend_timings:
            return []
        timed = ", ".join(f"{n} {ms:.1f} ms" for n, ms in self.backend_timings.items())
        notes = [f"backend auto: {self.backend} ({timed} a batch)"]
        notes += [
            f"backend auto: {name} left out: {why}"
            for name, why in self.backend_errors.items()
            if not why.startswith(("ImportError", "ModuleNotFoundError"))
        ]
        return notes

    @property
    def labels(self) -> list[str]:
        """The labels as stored (text), in the order of the probability columns."""
        return list(self.model_dir.labels)

    @property
    def classes_(self) -> np.ndarray:
        """The labels as given to fit (ints stay ints), in the order of the probability columns."""
        return np.array(self._label_values())

    def _label_values(self) -> list:
        md = self.model_dir
        return md.label_values if md.label_values is not None else list(md.labels)

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids of each window, and the text each belongs to (see `long_text`)."""
        return self._encode(check_texts(texts))

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        md = self.model_dir
        return md.tokenizer.encode_windows(texts, md.max_length, self.long_text)

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, C) float32 scores before the softmax, rows in input order (a long text's windows
        averaged, see `long_text`)."""
        texts = check_texts(texts)  # a list from here on: `texts` may be a one-shot iterator
        ids, owner = self._encode(texts)
        if not ids:
            return torch.empty(0, len(self.labels))
        return pool_windows(self.logits_from_ids(ids), owner, len(texts))

    def logits_from_ids(
        self, ids: Sequence[Sequence[int]], synthetic: bool = False
    ) -> torch.Tensor:
        """Logits (N, C) float32 for token ids, rows in input order (longest batches first).
        `synthetic`: the load's own warm-up and timing batches (for error messages)."""
        pad_id = self.model_dir.tokenizer.pad_id
        # numpy between the runners: ONNX Runtime takes and returns it, torch wraps it without a
        # copy, and at batch 1 the tensor bookkeeping was a fifth of an int8 call's time.
        out = np.empty((len(ids), len(self.model_dir.labels)), dtype=np.float32)
        for rows in length_sorted_batches(row_lengths(ids), self.batch_size):
            longest = max(len(ids[i]) for i in rows)
            input_ids, mask = pad_rows(ids, rows, pad_id, self._pad_multiple(longest))
            out[rows] = self._runner(input_ids, mask)
        if not np.isfinite(out).all():  # printed as NaN: not JSON, and no answer at all
            bad = int((~np.isfinite(out)).any(axis=1).sum())
            where = self.model_dir.meta.get("path", "the model")
            what = "its warm-up batch at load" if synthetic else f"{bad} of {len(ids)} inputs"
            raise ValueError(
                f"{where}: non-finite scores (NaN or inf) for {what}: its weights hold NaN/inf, "
                f"or the {self._runner_name} backend overflowed"
            )
        return torch.from_numpy(out)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) probabilities, rows in input order, columns in `classes_` order."""
        return torch.softmax(self.logits(texts), dim=-1).numpy()

    def predict(self, texts: Sequence[str]) -> list:
        """Labels as given to fit: text, or integers when fitted on integers (see classes_)."""
        labels = self._label_values()
        return [labels[i] for i in self.logits(texts).numpy().argmax(-1).tolist()]

    # ---- backends ----

    @property
    def _packed(self) -> bool:
        return hasattr(self.model, "forward_packed")

    def _pad_multiple(self, longest: int) -> int:
        if self._runner_name.startswith("compile") and not self._packed:
            # pad_rows rounds up to a multiple of this: the bucket is the one multiple >= longest
            return next(b for b in self.buckets if b >= longest)
        if self._runner_name.startswith("onnxruntime"):
            return 1  # ORT gains nothing from aligned lengths: padding is only wasted work
        return 8

    def _make_runner(self, name: str) -> Runner:
        self._runner_name = name
        if name == "torch":
            return self._torch_runner()
        if name == "torch-bf16":
            return self._torch_runner(torch.bfloat16)
        if name == "compile":
            return self._compiled_runner()
        if name == "compile-bf16":
            return self._compiled_runner(torch.bfloat16, freezing=True)
        if name == "onnxruntime":
            return self._ort_runner()
        if name == "onnxruntime-int8":
            return self._ort_runner(int8=True)
        raise ValueError(f"unknown backend {name!r}")

    def _torch_runner(self, autocast: torch.dtype | None = None) -> Runner:
        packed = self._packed
        device = self.device

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            ctx = torch.autocast(device.type, dtype=autocast) if autocast else nullcontext()
            use_packed = packed and _worth_packing(mask)
            fn = self.model.forward_packed if use_packed else self.model
            with torch.inference_mode(), ctx:
                args, order = _model_args(input_ids, mask, use_packed, device)
                return _in_order(fn(*args), order)

        return run

    def _compiled_runner(self, autocast: torch.dtype | None = None, freezing=False) -> Runner:
        packed = self._packed
        # Int8 layers on fbgemm's op stay out of the graph (Int8Linear.forward), so the graph
        # breaks at each; the pieces between get inputs that nothing marked dynamic, and were
        # compiled again for every new shape until dynamo's limit. dynamic=True makes every
        # piece shape-generic from its first compile.
        dynamic = _breaks_graph(self.model)
        compiled = torch.compile(self.model, backend=self._compile_backend, dynamic=dynamic)
        compiled_packed = (
            torch.compile(self.model.forward_packed, backend=self._compile_backend, dynamic=dynamic)
            if packed
            else None
        )
        # A packable model: the length axis is dynamic too (one graph for all lengths runs as
        # fast as one per bucket, and compiles in a tenth of the time). Otherwise every bucket
        # compiles twice at most (batch 1, which dynamo always specialises, and batch >= 2).
        # Raise dynamo's per-function limit so long max_lengths never fall back to eager
        # silently; patched per call, not globally: other compiled code keeps its limit.
        limit = max(8, 2 * len(self.buckets) + 2)
        device = self.device

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            use_packed = packed and _worth_packing(mask)
            args, order = _model_args(input_ids, mask, use_packed, device)
            for a in args:
                for t in a if isinstance(a, list) else [a]:
                    # every axis (ids, masks, packed index); the batch axis only with buckets
                    for dim in range(t.dim() if packed else 1):
                        torch._dynamo.maybe_mark_dynamic(t, dim)
            ctx = torch.autocast(device.type, dtype=autocast) if autocast else nullcontext()
            # Freezing is read when a graph is compiled (first call per bucket); patched per
            # call like the limit, so other compiled code in the process is not frozen.
            with (
                torch.inference_mode(),
                torch._dynamo.config.patch(recompile_limit=limit),
                _freezing(freezing),
                ctx,
            ):
                return _in_order((compiled_packed if use_packed else compiled)(*args), order)

        return run

    def _ort_runner(self, int8: bool = False) -> Runner:
        from .export import SLOW_FUSIONS, ExportError, _sidecar, require_onnxruntime
        from .fileio import readable_path

        ort = require_onnxruntime()  # (onnx too only if a graph must be made: `_in_cache`)
        if self._onnx_path:  # the caller's file, for either backend
            path = Path(self._onnx_path)
        else:
            path = self._int8_file() if int8 else self._onnx_file()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # torch's intra-op count is the physical cores by default, and is what `serve --threads`
        # sets per worker; ORT's default (all logical cores) oversubscribes a shared box.
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")

        def session(path: Path):
            with readable_path(path) as name:
                return ort.InferenceSession(
                    name, so, providers=providers, disabled_optimizers=SLOW_FUSIONS
                )

        try:
            try:
                sess = session(path)
            except Exception:
                if self._onnx_path or path.parent != _cache_dir():
                    raise  # not our own cached export: a caller's or a directory's file stays
                # our own cached export, damaged (a full disk, a copy cut short): it was
                # never made again, and the backend failed until someone deleted it by hand
                path.unlink(missing_ok=True)
                _sidecar(path).unlink(missing_ok=True)
                path = self._int8_file() if int8 else self._onnx_file()
                sess = session(path)
        except Exception as e:  # ORT's Fail, InvalidProtobuf, ...: a graph it cannot run
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            msg = f"{path}: ONNX Runtime {ort.__version__} cannot load it ({why})"
            raise ExportError(msg) from None
        # What the graph itself declares, not a side file: the file could be another model's
        inputs = {i.name: i.type for i in sess.get_inputs()}
        outputs = {o.name: o.shape for o in sess.get_outputs()}
        if set(inputs) != {"input_ids", "attention_mask"} or "logits" not in outputs:
            raise ExportError(
                f"{path}: not a slimtext classifier graph (inputs {sorted(inputs)}, outputs "
                f"{sorted(outputs)})"
            )
        n, labels = outputs["logits"][-1], len(self.model_dir.labels)
        if isinstance(n, int) and n != labels:
            raise ExportError(
                f"{path}: gives {n} class scores, this model has {labels} labels: the export of "
                "another model; export this one again (slimtext export)"
            )
        int_mask = inputs["attention_mask"] == "tensor(int64)"
        self.onnx_path = path

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            m = mask.astype(np.int64) if int_mask else mask
            return sess.run(["logits"], {"input_ids": input_ids, "attention_mask": m})[0]

        return run

    def _onnx_file(self) -> Path:
        """The directory's verified `model.onnx`, else a cached export keyed by the weights."""
        from .export import GRAPH_VERSION, ONNX_FILE, export_onnx

        if (listed := _still_listed(self.model_dir, ONNX_FILE)) is not None:
            return listed
        cached = _cache_dir() / f"{_weights_key(self.model_dir)}.{GRAPH_VERSION}.onnx"
        return _in_cache(cached, lambda: export_onnx(self.model_dir, out=cached))

    def _int8_file(self) -> Path:
        """The directory's verified `model.int8.onnx`, else a cached quantisation."""
        from .export import GRAPH_VERSION, INT8_FILE, quantize_onnx

        if (listed := _still_listed(self.model_dir, INT8_FILE)) is not None:
            return listed
        cached = _cache_dir() / f"{_weights_key(self.model_dir)}.{GRAPH_VERSION}.int8.onnx"
        # the weights read, not the path's now
        return _in_cache(cached, lambda: quantize_onnx(self.model_dir, out=cached))

    def _race(self, candidates: Sequence[str]) -> str:
        """Build each available candidate, time it on a synthetic batch, keep the fastest (a
        low-precision one only when it clearly beats fp32: see LOW_PRECISION_MARGIN)."""
        from .export import ExportError

        errors = self.backend_errors
        fastest: dict[bool, tuple] = {}  # low precision? -> (ms, name, runner, onnx_path)
        for name in candidates:
            if name not in BACKENDS or name == "auto":
                raise ValueError(f"auto candidates must be backends, got {name!r}")
            if name == "onnxruntime-int8" and not (
                self._onnx_path is None and _still_listed(self.model_dir, INT8_FILE) is not None
            ):
                # see AUTO_CANDIDATES: no int8 file, no int8 in the race (listed in the manifest
                # but not there, copied without it: quantising at load is no race entry either)
                continue
            if name.endswith("bf16") and not native_bf16(self.device):
                continue  # emulated bf16: slower than fp32, not worth timing
            try:
                self._runner = self._make_runner(name)
            # Not available here: onnxruntime not installed (ImportError), an ONNX cache that
            # cannot be written (OSError) or an export that fails its parity check. `auto` is
            # the serving default, so the rest still race.
            except (ImportError, OSError, ExportError) as e:
                errors[name] = f"{type(e).__name__}: {e}"
                continue
            ms = self._time_synthetic(self.batch_size)
            self.backend_timings[name] = ms
            low = name in LOW_PRECISION
            if low not in fastest or ms < fastest[low][0]:
                fastest[low] = (ms, name, self._runner, self.onnx_path)
            self.onnx_path = None  # each candidate's own, kept with it above
        if not fastest:
            raise RuntimeError(f"no backend available for auto: {errors}")
        pick = fastest.get(False) or fastest[True]
        if True in fastest and fastest[True][0] < pick[0] * (1 - LOW_PRECISION_MARGIN):
            pick = fastest[True]
        # onnx_path: the file the winner runs (None for a torch backend), not the last built
        _ms, best, self._runner, self.onnx_path = pick
        self._runner_name = best
        return best

    def warm_up_all(self) -> None:
        """Run every length bucket at batch 1 and 2, so no later call pays for a compilation
        (compile backend) or a first-shape allocation; seconds per bucket with `compile` (a
        packable model: two lengths, as one graph serves them all, and ragged batches for the
        packed graphs, length-grouped or not)."""
        vocab = self.model_dir.config.vocab_size
        lengths = self.buckets
        if self._packed and self._runner_name.startswith("compile"):
            lengths = [min(16, lengths[-1]), lengths[-1]]
            for n in (2, GROUP_MIN) if self.batch_size >= GROUP_MIN else (2,):
                # n texts of 1 to max tokens: half padding, so packed; length-grouped from
                # GROUP_MIN texts on
                sizes = np.linspace(1, lengths[-1], n).round().astype(int).tolist()
                rows = [[min(j + 1, vocab - 1) for j in range(t)] for t in sizes]
                self.logits_from_ids(rows, synthetic=True)
        for t in lengths:
            for n in (1, 2):
                row = [min(j + 1, vocab - 1) for j in range(t)]
                self.logits_from_ids([row] * n, synthetic=True)

    def _synthetic_ids(self, n: int) -> list[list[int]]:
        """n texts of mixed length around a mid-length t (t/4 to 2t, in shuffled order): the
        race should see typical batches, not the longest bucket, and not one length either. A
        batch of equal lengths flatters backends that pad (they have nothing to pad) and misses
        the packed path: on AG News it ranked onnxruntime ahead of torch (47 vs 58-66 ms a
        batch of 64) while real batches rank torch ahead, length-sorted (618 vs 516 docs/s) and
        in arrival order (574 vs 324; BENCHMARKS.md §5, session 8). Mixed: 99 vs 53 ms."""
        max_len = _max_len(self.model_dir)
        t = max(2, min(64, max_len) // 2)
        lengths = [t] if n == 1 else np.linspace(max(2, t // 4), min(max_len, 2 * t), n).round()
        vocab = self.model_dir.config.vocab_size
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(n, generator=g).tolist()
        return [torch.randint(1, vocab, (int(lengths[i]),), generator=g).tolist() for i in order]

    def _run_synthetic(self, n: int) -> None:
        self.logits_from_ids(self._synthetic_ids(n), synthetic=True)

    def _time_synthetic(self, n: int, repeats: int = 3) -> float:
        ids = self._synthetic_ids(n)
        self.logits_from_ids(ids, synthetic=True)  # warm-up (and compile); not timed
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.logits_from_ids(ids, synthetic=True)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


# Run forward_packed only on batches with less than this share of real token positions. Packing
# skips padding's projections and FFN but gathers each layer's keys and values into a padded
# layout and back, ~5-8% of a batch. AG News, batches of 64 (compile-bf16, 2-core AMD EPYC,
# BENCHMARKS.md §5 session 12): sorted texts, fill 0.92: forward 2,160 docs/s vs packed 2,040;
# fill 0.89: level; 0.84: 1,795 vs 2,002; arrival order, 0.49: 1,034 vs 1,797. torch-bf16 at
# 0.92: 1,600 vs 1,540.
PACK_BELOW_FILL = 0.9


def _worth_packing(mask: np.ndarray) -> bool:
    # One text has no padding of its own, only the rounding up to a multiple of 8. A row with no
    # token at all (a user's tokenizer without [UNK] or a template) has no first token for
    # packed [CLS] pooling to read: it took the next text's, an answer that followed its batch.
    return len(mask) > 1 and bool(mask.mean() < PACK_BELOW_FILL) and bool(mask[:, 0].all())


# forward_packed's attention groups: a batch of at least GROUP_MIN texts is sorted by length
# and cut into GROUPS groups of equal count, each padded to its own longest text. Attention then
# costs Σ B_g·T_g² instead of B·T²: AG News at batch 64 in random order, where a batch's longest
# text is ~2.5x its mean, SDPA is ~35% of a compile-bf16 batch unsplit (BENCHMARKS.md §5).
# Fewer than GROUP_MIN texts keep one group (a few rows cost more per row than they save), and
# so does a batch whose groups would save less than GROUP_SAVING of the attention work: each
# group is one more SDPA call, ~0.1 ms of fixed cost on this CPU.
GROUPS, GROUP_MIN, GROUP_SAVING = 4, 32, 0.2


def _model_args(
    input_ids: np.ndarray, mask: np.ndarray, packed: bool, device: torch.device
) -> tuple[list, np.ndarray | None]:
    """`forward`'s (input_ids, mask); for `forward_packed` (input_ids, mask or a list of group
    masks, index): the real tokens' flat positions, padded with position 0 up to `row_bucket`
    (rows computed, unread). Also the row order the logits come back in (None: as given)."""
    groups = _group_rows(mask) if packed and len(mask) >= GROUP_MIN else None
    order = None if groups is None else np.concatenate(groups)
    if groups is not None:
        masks, ids = [], []
        for rows in groups:
            t = -(-int(mask[rows[-1]].sum()) // 8) * 8  # the group's longest, rounded up to 8
            masks.append(np.ascontiguousarray(mask[rows, :t]))
            ids.append(input_ids[rows, :t].reshape(-1))
        index = np.flatnonzero(np.concatenate([m.reshape(-1) for m in masks]))
        mask_arg = [torch.from_numpy(m).to(device) for m in masks]
        args = [torch.from_numpy(np.concatenate(ids)), mask_arg]
    else:
        args = [torch.from_numpy(input_ids), torch.from_numpy(mask)]
        index = np.flatnonzero(mask) if packed else None
    if index is not None:
        args.append(torch.from_numpy(np.pad(index, (0, row_bucket(len(index)) - len(index)))))
    return [a if isinstance(a, list) else a.to(device) for a in args], order


def _group_rows(mask: np.ndarray) -> list[np.ndarray] | None:
    """The rows of each attention group (sorted by length), or None when one group is better."""
    lengths = mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    sizes = np.full(GROUPS, len(order) // GROUPS) + (np.arange(GROUPS) < len(order) % GROUPS)
    groups = np.split(order, np.cumsum(sizes)[:-1])
    work = sum(len(g) * int(lengths[g[-1]]) ** 2 for g in groups)
    return groups if work <= (1 - GROUP_SAVING) * len(order) * int(lengths.max()) ** 2 else None


def _in_order(logits: torch.Tensor, order: np.ndarray | None) -> np.ndarray:
    """Logits of rows computed in `order`, back in the batch's own order."""
    out = logits.float().cpu().numpy()
    if order is None:
        return out
    back = np.empty_like(out)
    back[order] = out
    return back


def _breaks_graph(model: torch.nn.Module) -> bool:
    from .compress.quantize import Int8Linear

    return any(isinstance(m, Int8Linear) and m.dynamic for m in model.modules())


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes bfloat16 in hardware: a CPU with AMX or AVX512-BF16, or a CUDA
    GPU that supports it. Elsewhere bf16 is emulated and slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    from .train.precision import cpu_has_bf16  # the one CPU test, shared with training

    return cpu_has_bf16()


def _freezing(on: bool):
    if not on:
        return nullcontext()
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def length_buckets(max_len: int, smallest: int = 16, per_octave: int = 4) -> list[int]:
    """Padded lengths the compile backend uses (models without `forward_packed`), then max_len:
    multiples of `smallest` up to 4 x smallest, then `per_octave` evenly spaced lengths per
    doubling (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, ...). Padding then costs at most
    1/per_octave of a batch's compute above 64 tokens (AG News at batch 64: 14% more token
    positions than the texts have, against 36% with powers of two), for about twice as many
    compiled graphs."""
    out, b = [], smallest
    while b < max_len:
        out.append(b)
        b += _octave_step(b, smallest, per_octave)
    return out + [max_len]


def _octave_step(n: int, smallest: int, per_octave: int) -> int:
    """Spacing of the sizes in n's doubling [2^k, 2^(k+1)): 1/per_octave of 2^k, at least
    `smallest`."""
    return max(smallest, (1 << (n.bit_length() - 1)) // per_octave)


def row_bucket(n: int, per_octave: int = 8) -> int:
    """n rounded up to one of `per_octave` sizes per doubling (multiples of 16 below 128):
    the packed token count a compiled graph sees. oneDNN builds a matmul primitive for every
    new row count, which cost more than the matmuls themselves when every batch brought a new
    one; rounding costs at most 1/per_octave extra rows."""
    step = _octave_step(max(n - 1, 1), 16, per_octave)  # n - 1: a power of two stays itself
    return -(-n // step) * step


def _max_len(md: ModelDir) -> int:
    # Longest batch the model can take: the tokenizer's cap rounded up to the usual multiple of 8,
    # but never past the position table.
    return min(int(md.config.max_length), -(-int(md.max_length) // 8) * 8)


def _still_listed(md: ModelDir, name: str) -> Path | None:
    """The directory's `name` if the manifest `md` was read against lists it and the file is
    still that one: a directory replaced after it was read (a retrain) may hold another
    model's export, which must not run with these weights."""
    from .fileio import sha256_file

    d, entry = md.meta.get("path"), md.meta.get("manifest", {}).get(name)
    if not d or not isinstance(entry, dict) or not md.weights_as_read():
        return None  # (a model changed in memory after loading: the file is the old one's)
    try:
        return Path(d) / name if sha256_file(Path(d) / name) == entry.get("sha256") else None
    except OSError:
        return None


def _weights_key(md: ModelDir) -> str:
    """The cache key of `md`'s weights: the checksum its files were verified against (the
    file at its path may since belong to another model), else a hash of the weights."""
    entry = md.meta.get("manifest", {}).get("model.safetensors")
    if isinstance(entry, dict) and entry.get("sha256") and md.weights_as_read():
        return entry["sha256"][:32]
    h = hashlib.sha256()
    for k, v in md.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


class CacheError(OSError):
    """The ONNX cache cannot be written (SLIMTEXT_CACHE a file, a full disk); `auto` then races
    the other backends, and a command says which folder in one line."""


def _in_cache(cached: Path, make: Callable[[], object]) -> Path:
    if cached.is_file():
        return cached
    if str(cached).startswith("~"):  # no HOME and no passwd entry (an arbitrary container uid)
        raise CacheError(
            "no home folder to keep the ONNX cache in: set SLIMTEXT_CACHE to a writable folder, "
            "or export into the model directory (slimtext export DIR)"
        )
    from .export import require_onnxruntime

    require_onnxruntime(onnx=True)  # making a graph needs onnx: said before any folder is made
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        make()
    except OSError as e:
        raise CacheError(
            f"cannot write the ONNX cache {cached.parent} ({e.strerror or e}): set SLIMTEXT_CACHE "
            "to a writable folder, or export into the model directory (slimtext export DIR)"
        ) from None
    return cached


def _cache_dir() -> Path:
    root = os.environ.get("SLIMTEXT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "slimtext"
    )
    return Path(root) / "onnx"


def load(
    path: str | os.PathLike,
    backend: str = "torch",
    device: str = "cpu",
    batch_size: int = 64,
    **options,
) -> Predictor:
    """Load a model directory for prediction on `backend` (torch | torch-bf16 | compile |
    compile-bf16 | onnxruntime | onnxruntime-int8 | auto).

    `options` go to `Predictor`: `onnx_path` (e.g. the directory's `model.int8.onnx`),
    `compile_backend`, `candidates` (backends `auto` races), `warmup`.
    """
    return Predictor(
        read_model_dir(path), backend=backend, device=device, batch_size=batch_size, **options
    )
