"""The model directory: the unit of exchange between train, compress, export, infer and serve.

    config.json        format, model config, max_length, training config, compression steps
    model.safetensors  weights (never pickle)
    tokenizer.json     Hugging Face `tokenizers` file
    labels.json        label names in id order
    metrics.json       evaluation reports
    README.md          a short model card
    manifest.json      sha256 + size of every file, checked on load

Written atomically (temp dir, then rename); read back with verification, so a truncated or
tampered directory gives a `ModelDirError` naming the problem instead of a traceback.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .fileio import (
    MANIFEST,
    IntegrityError,
    TargetExistsError,
    atomic_dir,
    check_replaceable,
    entry_matches,
    readable_path,
    verify_manifest,
)
from .models import ModelConfig, build_model
from .tokenizer import TextTokenizer, TokenizerError, check_long_text, load_tokenizer

FORMAT = "slimtext-model"
FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "labels.json")
# Exports written into a model directory (slimtext.export), each with a ".json" side file: made
# from the weights, so one that does not verify is set aside (made again), never fatal.
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
DERIVED = tuple(f"{name}{end}" for name in (ONNX_FILE, INT8_FILE) for end in ("", ".json"))
# For people, not for predicting: a model card the user edited, a training log or curve left
# out of a copy is set aside too (it made the whole directory unloadable); "/" ends a folder.
INFORMATIONAL = ("README.md", "training_curve.png", "metrics.jsonl", "tensorboard/")
# What a loaded classifier's save carries over from the directory it was read from: the
# training's own records (the model card is written anew). Saving it back into that directory
# deleted its training log, curve and TensorBoard files.
TRAINING_RECORDS = ("training_curve.png", "metrics.jsonl", "tensorboard/")


class ModelDirError(ValueError):
    """A model directory that cannot be loaded; the message says which file and why."""


@dataclass
class ModelDir:
    model: nn.Module
    config: ModelConfig
    tokenizer: TextTokenizer
    labels: list[str]
    max_length: int
    meta: dict = field(default_factory=dict)  # train config, metrics, compression steps
    long_text: str = "truncate"  # how texts longer than max_length are read (tokenizer.LONG_TEXT)
    # The labels as the Python caller gave them (ints, floats, text with spaces), in the order of
    # `labels`, where they differ from the text stored in labels.json; predictions use these.
    label_values: list | None = None
    # `weights_state(model)` as read from the directory, or as `TextClassifier.fit` trained it
    # (None: neither); see `weights_as_read`.
    read_state: tuple | None = field(default=None, repr=False, compare=False)

    def weights_as_read(self) -> bool:
        """Whether `model` still holds the weights read from `meta["path"]` (or trained): false
        once it was pruned, quantised or edited in memory, when the directory's files (its
        exports, its checksums) and its metrics no longer describe it."""
        return self.read_state is not None and self.read_state == weights_state(self.model)

    # A copy (pickle, joblib, deepcopy) holds the same weights in new storage: the fingerprint
    # is taken again, else every copy counted as edited (its metrics set aside on save, export
    # into its directory refused).
    # An edited model stays edited in the copy: its fingerprint becomes one that matches none.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.read_state is not None:
            state["read_state"] = "as read" if self.weights_as_read() else "edited"
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.read_state == "as read":
            self.read_state = weights_state(self.model)
        elif self.read_state is not None:
            self.read_state = ("edited",)


def weights_state(model: nn.Module) -> tuple:
    """A cheap fingerprint of the tensors `model` holds now: each one's storage and count of
    in-place changes (torch's version counter), so an edit after loading (`prune_`, `mul_`,
    `param.data = ...`, a replaced module) shows without hashing the weights."""

    def ptr(t: torch.Tensor) -> int:
        try:
            return t.data_ptr()
        except RuntimeError:  # a tensor subclass without storage (2:4 sparse weights)
            return 0

    return tuple(
        (k, ptr(v), v._version, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()
    )


def save_model_dir(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelConfig,
    tokenizer: TextTokenizer,
    labels: list[str],
    *,
    max_length: int,
    long_text: str = "truncate",
    train_config: dict | None = None,
    metrics: dict | None = None,
    compression: list[dict] | None = None,
    extra_files: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write a complete model directory at `path` (replacing a previous model directory
    atomically). Anything else already at `path` is left alone: `TargetExistsError`."""
    _check_not_cwd(path)
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        with atomic_dir(path, is_ours=is_model_dir) as tmp:
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
            try:
                tokenizer.save(tmp / "tokenizer.json")
            except Exception as e:  # tokenizers reports I/O errors as a bare Exception
                raise OSError(str(e)) from None
            _write_json(tmp / "labels.json", list(labels))
            _write_json(
                tmp / "config.json",
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "slimtext_version": _version(),
                    "model": config.to_dict(),
                    "max_length": max_length,
                    "long_text": long_text,
                    "train": train_config or {},
                    "compression": compression or [],
                },
            )
            _write_json(tmp / "metrics.json", _compact_metrics(metrics or {}))
            card = _model_card(path.name, model, config, labels, metrics,
                               train_config=train_config, compression=compression)  # fmt: skip
            # UTF-8, not the locale's; a path the C locale decoded keeps its own bytes
            (tmp / "README.md").write_text(card, encoding="utf-8", errors="surrogateescape")
            for name, src in (extra_files or {}).items():
                if Path(src).is_file():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # "tensorboard/x"
                    shutil.copyfile(src, tmp / name)
                elif Path(src).is_dir():  # e.g. the run's TensorBoard event files
                    shutil.copytree(src, tmp / name)
    except TargetExistsError:
        raise
    except (OSError, SafetensorError) as e:  # a full disk, a read-only one: one clear line
        raise ModelDirError(f"{path}: could not write the model directory ({e})") from None
    return path


def training_records(md: ModelDir) -> dict[str, Path]:
    """The TRAINING_RECORDS files of the directory `md` was read from, by name as
    `save_model_dir(extra_files=...)` takes them: those still as its manifest listed them when
    read (a directory retrained since holds another run's)."""
    path, listed = md.meta.get("path"), md.meta.get("manifest")
    if not path or not isinstance(listed, dict):
        return {}
    root = Path(path)

    def is_record(rel: str) -> bool:
        return rel in TRAINING_RECORDS or any(
            rel.startswith(d) for d in TRAINING_RECORDS if d.endswith("/")
        )

    return {
        rel: root / rel
        for rel, entry in listed.items()
        if is_record(rel) and entry_matches(root, rel, entry)
    }


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a model directory (a manifest and a slimtext config.json): the only
    non-empty directory `save_model_dir` may replace, since replacing deletes the old one."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return False
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def check_save_target(
    path: str | os.PathLike, reads: Iterable = (), is_ours: Callable[[Path], bool] = is_model_dir
) -> None:
    """Raise `TargetExistsError` now if `save_model_dir(path)` would refuse `path`: lets a
    caller fail before training rather than after. `reads`: the directories the run is built
    from (the model being compressed, an `--init` encoder); writing over one of them, or over a
    folder holding one, would delete it when the run ends. `is_ours`: which existing non-empty
    directories may be replaced (model directories)."""
    _check_not_cwd(path)
    _check_name_length(path)
    check_replaceable(path, is_ours)
    _check_writable(Path(os.path.abspath(path)).parent)
    target = Path(path).resolve()
    for src in reads:
        if not src:
            continue
        src = str(src).removeprefix("hf:")  # hf:PATH names a local folder too
        s = Path(src).resolve()
        if target == s or target in s.parents:
            raise TargetExistsError(
                f"{path}: the run reads {src} from there, and writing its result there would "
                "delete it; choose another output path"
            )


def _check_not_cwd(path: str | os.PathLike) -> None:
    """Refuse "" (an unset $OUT), "." and any folder holding the working folder: the atomic
    save swaps the target out, and the process (and its shell) was left in a deleted folder."""
    if not os.fspath(path).strip():
        raise ValueError("empty output path (an unset variable?)")
    try:
        target, cwd = Path(path).resolve(), Path.cwd().resolve()
    except (OSError, RuntimeError):  # no working folder left; a symlink loop (said next)
        return
    if target == cwd or target in cwd.parents:
        raise ValueError(
            f"{path}: the output would replace the working folder (or a folder holding it); "
            "choose another path"
        )


# What a run puts beside and below its output's name: the temporary ".NAME.tmp-XXXXXXXX" of
# an atomic save, "NAME.checkpoints/step-000000001/dcp/__0_0.distcp" of a checkpointed one.
_NAME_EXTRA, _PATH_EXTRA = 14, 64


def _check_name_length(path: str | os.PathLike) -> None:
    """A name the file system takes but whose temporary or checkpoint siblings it does not:
    found before training, not by a traceback (or after the whole run, at save)."""
    full = os.path.abspath(path)
    name = os.path.basename(full)
    parent = os.path.dirname(full)
    on = parent if os.path.isdir(parent) else "/"  # (a parent the save will create)
    try:
        name_max, path_max = os.pathconf(on, "PC_NAME_MAX"), os.pathconf(on, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if len(os.fsencode(name)) + _NAME_EXTRA > name_max:
        raise ValueError(
            f"{path}: the name is too long ({len(os.fsencode(name))} bytes): a save needs "
            f"{_NAME_EXTRA} more for its temporary copy, and this file system allows {name_max}"
        )
    if len(os.fsencode(full)) + _PATH_EXTRA > path_max:
        raise ValueError(
            f"{path}: the path is too long ({len(os.fsencode(full))} bytes; the files of a "
            f"run below it need up to {_PATH_EXTRA} more, and the limit is {path_max})"
        )


def read_model_dir(path: str | os.PathLike) -> ModelDir:
    """Load and verify a model directory.

    A directory replaced while it is read (a retrain saving into the same path swaps the new
    one in) could give the files of two models: the manifest is read before and after, and a
    change means reading again. `meta["manifest"]` is the manifest the files were checked
    against."""
    path = Path(path)
    if not path.exists():
        raise ModelDirError(f"{path}: no such model directory")
    for attempt in range(3):
        before = _manifest_bytes(path)
        try:
            md = _read_model_dir(path)
        except ModelDirError:
            if attempt < 2 and _manifest_bytes(path) != before:
                continue  # replaced mid-read: what failed was a mix of two models
            raise
        if _manifest_bytes(path) == before:
            md.meta["manifest"] = json.loads(before)["files"]
            md.read_state = weights_state(md.model)
            return md
    raise ModelDirError(f"{path}: replaced again and again while being read; try again")


def _manifest_bytes(path: Path) -> bytes | None:
    try:
        return (path / MANIFEST).read_bytes()
    except OSError:
        return None


def _check_writable(folder: Path) -> None:
    """ModelDirError now if nothing can be written in `folder` (or, when it does not exist yet,
    the nearest folder above it): a read-only disk failed with a traceback after training."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        probe = tempfile.mkdtemp(prefix=".slimtext-probe-", dir=folder)
    except OSError as e:
        raise ModelDirError(f"{folder}: cannot write there ({e.strerror or e})") from None
    os.rmdir(probe)


def _read_model_dir(path: Path) -> ModelDir:
    try:
        listed = verify_manifest(path, required=REQUIRED, derived=DERIVED + INFORMATIONAL)
    except IntegrityError as e:
        raise ModelDirError(str(e)) from None
    cfg = _read_json(path / "config.json")
    if not isinstance(cfg, dict):
        raise ModelDirError(f"{path / 'config.json'}: expected a JSON object")
    if cfg.get("format") != FORMAT:
        raise ModelDirError(
            f"{path / 'config.json'}: not a slimtext model (format={cfg.get('format')!r})"
        )
    for key in ("format_version", "max_length"):
        if key in cfg and not _positive_int(cfg[key]):
            raise ModelDirError(
                f"{path / 'config.json'}: {key} must be a positive integer, got {cfg[key]!r}"
            )
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ModelDirError(
            f"{path}: written by a newer slimtext (format {cfg['format_version']}); please upgrade"
        )
    try:
        config = ModelConfig.from_dict(cfg["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{path / 'config.json'}: invalid model config ({e})") from None
    labels = _read_json(path / "labels.json")
    if not isinstance(labels, list) or len(labels) != config.num_labels:
        raise ModelDirError(
            f"{path / 'labels.json'}: expected a list of {config.num_labels} labels"
        )
    if not all(isinstance(x, str) and x for x in labels):
        raise ModelDirError(f"{path / 'labels.json'}: expected distinct, non-empty text labels")
    # NFC, as data files' labels are read (slimtext.data): a model saved before that, from
    # labels in decomposed form (macOS), must still meet its own data
    labels = [unicodedata.normalize("NFC", x) for x in labels]
    if len(set(labels)) != len(labels):
        # a duplicate lost one class's probability in every answer (a dict keyed by label)
        raise ModelDirError(f"{path / 'labels.json'}: expected distinct, non-empty text labels")
    for key, kind in (("train", dict), ("compression", list)):
        if not isinstance(cfg.get(key, kind()), kind):
            raise ModelDirError(f"{path / 'config.json'}: {key} must be a JSON {kind.__name__}")
    try:
        tokenizer = load_tokenizer(path / "tokenizer.json")
    except TokenizerError as e:
        raise ModelDirError(str(e)) from None
    if tokenizer.vocab_size > config.vocab_size:  # its ids would index past the table
        raise ModelDirError(
            f"{path / 'tokenizer.json'}: {tokenizer.vocab_size} tokens, but the model's table "
            f"has {config.vocab_size} rows: the tokenizer of another model"
        )
    # The sizes config.json claims, checked against the weights file's header before anything
    # that large is allocated (a doctored 10**9 was a terabyte allocation, or a hang)
    _check_shapes(path, config, cfg.get("compression") or [])
    model = _build(path, config, cfg.get("compression") or [])
    try:
        with readable_path(path / "model.safetensors") as weights:
            state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise ModelDirError(f"{path / 'model.safetensors'}: unreadable weights ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelDirError(
            f"{path / 'model.safetensors'}: weights do not match config.json ({e})"
        ) from None
    model.eval()
    model.slimtext_compression = list(cfg.get("compression") or [])  # what later steps extend
    # metrics.json only as the manifest lists it: an unlisted file (a link to any JSON on the
    # machine) vouches for nothing, and /v1/model shows the metrics to every client
    metrics = _read_json(path / "metrics.json") if "metrics.json" in listed else {}
    if not isinstance(metrics, dict):
        raise ModelDirError(f"{path / 'metrics.json'}: expected a JSON object")
    meta = {
        "train": cfg.get("train", {}),
        "compression": cfg.get("compression", []),
        "metrics": metrics,
        "slimtext_version": cfg.get("slimtext_version"),
        "path": str(path),
    }
    try:  # absent in directories written before it existed
        long_text = check_long_text(cfg.get("long_text", "truncate"))
    except ValueError as e:
        raise ModelDirError(f"{path / 'config.json'}: {e}") from None
    max_length = int(cfg.get("max_length", config.max_length))
    values = _label_values(meta["train"], labels, path / "config.json")
    return ModelDir(model, config, tokenizer, labels, max_length, meta, long_text, values)


MAX_LAYERS = 1024  # building a doctored 10**7 blocks, even without memory, never ended


def _build(path: Path, config: ModelConfig, compression: list) -> nn.Module:
    """The model config.json describes, with its recorded compression steps' structure
    (pruned, factorised or quantized layers have other shapes than the config alone builds)."""
    if config.num_layers > MAX_LAYERS:
        raise ModelDirError(f"{path / 'config.json'}: {config.num_layers} layers is not a model")
    model = build_model(config)
    if compression:
        from .compress import rebuild_

        try:
            rebuild_(model, compression)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise ModelDirError(
                f"{path / 'config.json'}: cannot rebuild compressed model ({e})"
            ) from None
    return model


def _check_shapes(path: Path, config: ModelConfig, compression: list) -> None:
    """ModelDirError unless the model config.json describes (built on the meta device: no
    memory) has exactly the tensors and shapes of model.safetensors' header."""
    from safetensors import safe_open

    weights = path / "model.safetensors"
    try:
        with readable_path(weights) as name, safe_open(name, framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        raise ModelDirError(f"{weights}: unreadable weights ({e})") from None
    try:
        with torch.device("meta"):
            probe = _build(path, config, compression)
    except (RuntimeError, ValueError, OverflowError) as e:  # sizes past what torch can index
        raise ModelDirError(f"{path / 'config.json'}: sizes no model has ({e})") from None
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    if have != want:
        diff = sorted(set(have) ^ set(want)) or sorted(k for k in want if have[k] != want[k])
        k = diff[0]
        raise ModelDirError(
            f"{weights}: weights do not match config.json ({len(diff)} tensor(s) differ; "
            f"{k}: {have.get(k, 'missing')} in the file, {want.get(k, 'none')} in the config)"
        )


def _label_values(train: dict, labels: list[str], where: Path) -> list | None:
    """`train.label_values` of config.json, checked against labels.json. Directories written
    before it existed said `label_type: int` for integer labels."""
    values = train.get("label_values")
    if values is None and train.get("label_type") == "int":
        if not all(re.fullmatch(r"-?[0-9]+", x) for x in labels):
            raise ModelDirError(f"{where}: label_type int, but labels.json holds other labels")
        values = [int(x) for x in labels]
    if values is None:
        return None
    plain = (str, int, float)
    ok = isinstance(values, list) and len(values) == len(labels)
    if not ok or not all(isinstance(v, plain) and not isinstance(v, bool) for v in values):
        raise ModelDirError(f"{where}: train.label_values does not match labels.json")
    return values


def _positive_int(v) -> bool:
    return type(v) is int and v > 0  # not bool, which is an int to isinstance


def _write_json(p: Path, obj) -> None:
    p.write_text(
        json.dumps(obj, indent=2, ensure_ascii=False, default=_json_scalar) + "\n",
        encoding="utf-8",
    )


def _json_scalar(o):
    """numpy / torch scalars and arrays (a caller's metrics) as plain JSON values."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} {o!r} is not JSON serializable")


def _read_json(p: Path):
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: "[[[[..." nested deep
        raise ModelDirError(f"{p}: unreadable JSON ({e})") from None


def _version() -> str:
    from . import __version__

    return __version__


def _compact_metrics(metrics: dict) -> dict:
    """Each evaluation report in `metrics` (nested ones too) with many classes' N x N
    confusion matrix replaced by its most frequent confusions (`compact_report`)."""
    from .metrics import compact_report

    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict) and "confusion_matrix" in v:
            out[k] = compact_report(v)
        elif isinstance(v, dict):
            out[k] = _compact_metrics(v)
        else:
            out[k] = v
    return out


def _card_provenance(
    metrics: dict | None, train_config: dict | None, compression: list[dict] | None
) -> list[str]:
    """The model card's lines on where the weights came from: a card of an int8 or distilled
    model, or of one fine-tuned from a pretrained encoder, read like the plain trained model's,
    so its figures were taken for those of a model trained from scratch in fp32."""
    lines = []
    training = (metrics or {}).get("training") if isinstance(metrics, dict) else None
    data = training.get("data") if isinstance(training, dict) else None

    def rows(part: dict) -> str:  # save(metrics=...) takes any JSON: no crash on odd values
        n = part.get("rows")
        return f"{n:,} rows" if isinstance(n, int) else "? rows"

    def code(value) -> str:
        # a path is any text: a backtick ended the code span early and a newline broke the
        # card's line in two (a label's `` fences, as the Labels line has them)
        text = str(value).replace("\r", "\\r").replace("\n", "\\n")
        return f"`` {text} ``" if "`" in text else f"`{text}`"

    def data_line(said: str, data) -> None:
        if not (isinstance(data, dict) and isinstance(data.get("train"), dict)):
            return
        tr, va = data["train"], data.get("valid")
        line = f"{said} {code(tr.get('source'))} ({rows(tr)})"
        if isinstance(va, dict) and va.get("rows"):
            frac = va.get("held_out_fraction")
            held = f", held out of the training data: {frac:g}" if isinstance(frac, float) else ""
            line += f"; validated on {code(va.get('source'))} ({rows(va)}{held})"
        lines.append(line + ".")

    data_line("Trained on", data)
    init = (train_config or {}).get("init")
    if init:
        lines.append(f"Fine-tuned from the pretrained encoder {code(init)}.")
    # A weighted loss moves the decision boundary: probabilities lean to the weighted classes.
    weights = (train_config or {}).get("class_weight")
    if weights == "balanced":
        lines.append("Class weights: balanced (each class weighs the same in the loss).")
    elif isinstance(weights, dict) and weights:
        shown = ", ".join(f"{code(k)} {v:g}" if isinstance(v, (int, float)) else code(k)
                          for k, v in weights.items())  # fmt: skip
        lines.append(f"Class weights: {shown} (other classes 1).")
    steps = []
    for rec in compression or []:
        if isinstance(rec, dict) and rec.get("step"):
            # What the config alone does not say: a head and an FFN prune have the same config
            # (the card listed `prune:ratio=0.5` twice), and a distill step's student depth and
            # external teacher sit beside it in the record.
            student, cfg = rec.get("student"), rec.get("config")
            student = student if isinstance(student, dict) else {}
            facts = {"kind": rec.get("kind"), "layers": student.get("num_layers"),
                     "teacher": rec.get("teacher"),
                     **(cfg if isinstance(cfg, dict) else {})}  # fmt: skip
            opts = {k: v for k, v in facts.items()  # unset ones left out
                    if k != "version" and v is not None and v not in ([], (), {})}  # fmt: skip
            shown = ",".join(f"{k}={v}" for k, v in opts.items())
            steps.append(code(f"{rec['step']}" + (f":{shown}" if shown else "")))
    if steps:
        lines.append(f"Compressed after training: {', '.join(steps)} (see config.json).")
    if isinstance(metrics, dict):  # slimtext compress: the data its steps trained and chose on
        data_line("The compression steps trained on", metrics.get("compression_data"))
    return lines + [""] if lines else []


def _model_card(
    name: str, model: nn.Module, config: ModelConfig, labels, metrics, *,
    train_config: dict | None = None, compression: list[dict] | None = None,
) -> str:  # fmt: skip
    from .compress._util import count_params  # int8/int4 weights are buffers, still weights

    n = count_params(model)
    size = f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"
    layers = f"{config.num_layers} layer" + ("s" if config.num_layers != 1 else "")
    pre = (metrics or {}).get("pretrain")
    if isinstance(pre, dict):  # `slimtext pretrain`'s encoder: its head is a placeholder
        loss = pre.get("final_loss")
        return "\n".join([
            f"# {name}",
            "",
            f"A slimtext `{config.arch}` encoder pretrained by masked-language modelling "
            f"({size} parameters, hidden {config.hidden_size}, {layers}): {pre.get('steps')} "
            f"steps on {pre.get('texts')} texts"
            + (f", final MLM loss {loss:.3f}" if isinstance(loss, numbers.Real) else "") + ".",
            "",
            "It is not a classifier yet: its classification head is an untrained placeholder. "
            "Fine-tune it on labelled data:",
            "",
            f"    slimtext train --init {name} --data train.csv --out my-classifier",
            "",
            f'In Python: `slimtext.TextClassifier(init="{name}").fit(train)`.',
            "",
        ])  # fmt: skip
    lines = [
        f"# {name}",
        "",
        f"A slimtext `{config.arch}` text classifier ({size} parameters, "
        f"hidden {config.hidden_size}, {layers}).",
        "",
        *_card_provenance(metrics, train_config, compression),
        # the first 50 (2,000 made a 74 KB line); a backtick in a label gets `` fences
        f"Labels ({len(labels)}): "
        + ", ".join(f"`` {lab} ``" if "`" in lab else f"`{lab}`" for lab in labels[:50])
        + (f", ... ({len(labels) - 50} more in labels.json)" if len(labels) > 50 else ""),
        "",
    ]
    for split, rep in (metrics or {}).items():
        if not isinstance(rep, dict):
            continue
        # whatever a caller's report holds of these (save(metrics=...) takes any JSON)
        shown = [f"{k.replace('_', '-')} {rep[k]:.4f}" for k in ("accuracy", "macro_f1")
                 if isinstance(rep.get(k), numbers.Real)]  # fmt: skip
        if shown:
            lines.append(f"- {split}: {', '.join(shown)} (n={rep.get('n', '?')})")
    lines += [
        "",
        "```python",
        "import slimtext",
        f'clf = slimtext.load("{name}")',
        'clf.predict(["some text"])',
        "```",
        "",
        f'Command line: `slimtext predict {name} "some text"`.',
        "",
    ]
    return "\n".join(lines)
