"""`slimtext ...`: a thin shell over the Python API. One verb = one typed function.

Every verb takes `--config FILE.yaml` whose keys are the verb's option names (underscores or
dashes; `no-progress: true` for `--no-progress`); flags given on the command line override the
file.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gzip
import io
import json
import os
import queue
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="slimtext: train, evaluate and run small fast text classifiers.",
    pretty_exceptions_enable=False,
)


def _load_config(ctx: typer.Context, files: list[Path] | None) -> list[Path] | None:
    """Eager callback: YAML keys become the command's defaults, so explicit flags still win.
    Several files are layers (`--config base.yaml --config run.yaml`): a later file's key wins,
    as a flag wins over them all."""
    merged: dict = {}
    for value in files or ():
        merged.update(_read_config(ctx, value))
    if merged:
        ctx.default_map = {**(ctx.default_map or {}), **merged}
    return files


def _click():
    """The click that typer runs on: its own copy from typer 0.20 on, the click package before
    (typer>=0.12 is allowed)."""
    try:
        import typer._click as click
    except ImportError:
        import click
    return click


def _click_context():
    """(click's ParameterSource, the running command's context or None)."""
    click = _click()
    return click.core.ParameterSource, click.globals.get_current_context(silent=True)


def _from_file(e: Exception) -> str:
    """`e`'s message, and the YAML file and key its value came from when it is about an option
    that a config file set and no flag overrode: `precision: fp64` in a file was refused later,
    by the training options, as "precision must be one of ..." without naming the file."""
    ParameterSource, ctx = _click_context()
    msg = str(e)
    for name, where in ((ctx.meta.get(_SOURCES) or {}) if ctx else {}).items():
        spelled = (name, name.replace("_", "-"), f"--{name.replace('_', '-')}")
        if ctx.get_parameter_source(name) is ParameterSource.DEFAULT_MAP and any(
            msg.startswith((f"{n} ", f"{n}:", f"{n}=")) for n in spelled
        ):
            return f"{msg} ({where})"
    return msg


def _note_epochs_ignored(epochs: int, max_steps: int | None) -> None:
    """Say that a typed --epochs does nothing beside a --max-steps, most of all one a config
    file set: the run trained the file's steps without a word, and no flag takes it back."""
    ParameterSource, ctx = _click_context()
    if max_steps is None or ctx is None or os.environ.get("RANK", "0") != "0":
        return
    if os.environ.get(_LAUNCHED):  # rank 0 of `--nproc`: its launcher said it (it said twice)
        return
    if not isinstance(max_steps, int) or max_steps < 1:  # refused next: no run's length to set
        return
    if ctx.get_parameter_source("epochs") is not ParameterSource.COMMANDLINE:
        return
    where = (ctx.meta.get(_SOURCES) or {}).get("max_steps")
    if ctx.get_parameter_source("max_steps") is not ParameterSource.DEFAULT_MAP:
        where = None
    typer.echo(
        f"note: --epochs {epochs} is ignored: --max-steps {max_steps} sets the run's length"
        + (f" ({where}; remove it there to train by epochs)" if where else ""),
        err=True,
    )


_SOURCES = "slimtext.config_sources"  # ctx.meta: option name -> "FILE, key 'k'" (_from_file)


def _read_config(ctx: typer.Context, value: Path) -> dict:
    """One YAML file's values by parameter name, each checked as its option checks a flag."""
    import yaml

    try:  # bytes: YAML reads UTF-8 and, by their byte-order mark, UTF-16/32 files
        data = yaml.safe_load(Path(value).read_bytes())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"{value}: cannot read YAML ({e})") from None
    if data is None:  # an empty file (or only comments): no options. Not `or {}`, which also
        data = {}  # took a file holding just `false`, `0` or `''` as an empty mapping
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{value}: expected a mapping of option names to values")
    # A key is an option's name as typed (`json` for --json, `max-steps` or `max_steps`) or
    # the parameter behind it (`json_out`); an argument's by its name (`model_dir`). Not
    # `config`: a file naming another one would be ignored. A yes/no flag's `--no-...` form is
    # a key too, of the opposite value (`no-progress: true` is `progress: false`): it was
    # refused as unknown, though it is the option as typed.
    params = {p.name: p for p in ctx.command.params if p.name != "config"}
    alias, negated = {}, set()
    for p in params.values():
        for name in [p.name, *(o.lstrip("-") for o in p.opts if o.startswith("--"))]:
            alias[name.replace("-", "_")] = p.name
        if getattr(p, "is_bool_flag", False):
            for o in getattr(p, "secondary_opts", ()):
                name = o.lstrip("-").replace("-", "_")
                negated.add(name)
                alias[name] = p.name
    keys = {str(k): str(k).replace("-", "_") for k in data}
    unknown = sorted(k for k, a in keys.items() if a not in alias)
    if unknown:
        import difflib

        valid = sorted(
            o.lstrip("-") if o.startswith("--") else p.name
            for p in params.values()
            for o in [*p.opts, *getattr(p, "secondary_opts", ())]  # no-progress too
            if o.startswith("--") or p.param_type_name == "argument"
        )
        # A YAML made of a saved config.json holds training options no flag sets: said so, not
        # "did you mean" another option (keep_checkpoints -> gradient-checkpointing)
        recorded = [repr(k) for k in unknown if keys[k] in _recorded_only(ctx)]
        renamed = _recorded_as(ctx)
        # a typo's likely meaning first: the list of valid keys is long (~50 for train)
        hints = [f"{k!r} (config.json's name for --{o}: write '{o}: {data[k]}')"
                 if (o := renamed.get(keys[k])) else
                 f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(
                     k.replace("_", "-"), valid, n=1)) else repr(k)
                 for k in unknown if repr(k) not in recorded]  # fmt: skip
        said = [f"unknown keys {', '.join(hints)}"] if hints else []
        if recorded:
            said.append(f"{', '.join(recorded)}: config.json records them, but no option of "
                        "this command sets them")  # fmt: skip
        raise typer.BadParameter(f"{value}: {'; '.join(said)}; valid: {', '.join(valid)}")
    seen: dict[str, str] = {}
    for k, a in keys.items():
        if alias[a] in seen:  # `batch-size: 5` and `batch_size: 7`: which one was meant?
            raise typer.BadParameter(f"{value}: keys {seen[alias[a]]!r} and {k!r} are one option")
        seen[alias[a]] = k
    out = {}
    for k, v in data.items():
        p = params[alias[keys[str(k)]]]
        v = _home(v)
        many = p.multiple or p.nargs == -1
        # `text_col: review`: a list of one; `text_col:` (null), the default, as for any other key
        if many and v is not None and not isinstance(v, list):
            v = [v]
        values = v if many and v is not None else [v]
        if p.name == "class_weight" and isinstance(v, dict):  # the one option a mapping sets
            v = _yaml_class_weight(v, f"{value}: key {k!r}")
        if not many and isinstance(v, (list, dict)):
            raise typer.BadParameter(f"{value}: key {k!r} takes one value, got {v!r}")
        # Checked here, so that a bad value names this file and key (click would check it later
        # as the default of a flag the user never typed).
        if any(isinstance(x, bool) for x in values) and not getattr(p, "is_bool_flag", False):
            raise typer.BadParameter(f"{value}: key {k!r}: {v!r} is a yes/no value")
        try:
            coerced = _coerce(p, ctx, v)
            if p.name == "class_weight":  # its callback's checks, said with this file and key
                _class_weight(coerced)  # (as text: `class_weight: 3` is "3", as --class-weight 3)
        except Exception as e:  # click's, or typer's own BadParameter (typer >= 0.29)
            raise typer.BadParameter(f"{value}: key {k!r}: {getattr(e, 'message', e)}") from None
        if keys[str(k)] in negated and v is not None:  # `no-json: true` is `json: false`
            v = not _coerce(p, ctx, v)
        out[p.name] = v
        ctx.meta.setdefault(_SOURCES, {})[p.name] = f"{value}, key {k!r}"  # a later file wins
    return out


def _recorded_only(ctx: typer.Context) -> set[str]:
    """The fields of a model directory's config.json (its `model` and `train` parts) that
    `train` has no option for (eval_batch_size, keep_best, ...); none for other commands."""
    if ctx.command.name != "train":
        return set()
    from dataclasses import fields

    from .models import ModelConfig
    from .train import TrainConfig

    names = {f.name for cls in (ModelConfig, TrainConfig) for f in fields(cls)}
    return (names | {"label_values"}) - set(_recorded_as(ctx))


def _recorded_as(ctx: typer.Context) -> dict[str, str]:
    """The config.json fields an option of another name sets, by field: config.json's
    `arch: attention` is `--model attention` (it was said to be a field no option sets)."""
    return {"arch": "model"} if ctx.command.name == "train" else {}


def _coerce(p, ctx: typer.Context, value):
    """`value` read as parameter `p` reads its flag: typer >= 0.29 has its own coercion, older
    versions click's types."""
    if value is None:
        return None
    if hasattr(p, "get_runtime_param"):
        return p.get_runtime_param().coerce(value, param=p, ctx=ctx)
    if p.multiple or p.nargs == -1:
        return [p.type.convert(x, p, ctx) for x in value]
    return p.type.convert(value, p, ctx)


def _home(value):
    """`~/x` in a YAML value is the home folder, as the shell makes it of a flag: the YAML's
    `out: ~/m` was a folder named "~" in the working directory."""
    if isinstance(value, list):
        return [_home(v) for v in value]
    if isinstance(value, str) and (value == "~" or value.startswith("~/")):
        return os.path.expanduser(value)
    return value


def _lower(value: str | None) -> str | None:
    """A fixed-choice option's value in lower case: `--precision BF16` as `bf16`."""
    return value.lower() if isinstance(value, str) else value


def _yaml_class_weight(mapping: dict, where: str) -> str:
    """A YAML `class_weight` mapping as the JSON text the option takes. YAML reads an unquoted
    yes/no/on/off/true/false as a boolean and ~ or null as None: json.dumps made them the
    labels "true" and "null", refused only after the tokenizer was learnt, under a name nobody
    wrote. Which spelling it was is lost, so the label must be quoted. A number key is spelled
    as the data loaders spell labels (`1.0:` is "1", not "1.0"), and two keys of one label
    (`1:` and `'1':`) are refused: JSON kept the last one's weight without a word."""
    from .train.trainer import weight_label

    out: dict[str, object] = {}
    seen: dict[str, object] = {}  # each label's key as written
    for key, weight in mapping.items():
        if key is None or isinstance(key, bool):
            raise typer.BadParameter(
                f"{where}: label {key!r} is YAML's reading of an unquoted yes/no/on/off/true/"
                "false or ~/null: quote it ('yes': 3)"
            )
        try:
            name = key if isinstance(key, str) else weight_label(key)
        except ValueError as e:  # 1.5: no data file has such a label
            raise typer.BadParameter(f"{where}: {e}") from None
        if name in out:
            raise typer.BadParameter(f"{where}: labels {seen[name]!r} and {key!r} are one label")
        out[name], seen[name] = weight, key
    return json.dumps(out)


def _class_weight(value: str | dict | None) -> str | dict | None:
    """`--class-weight`: balanced | none | LABEL=W,LABEL=W | a JSON object (what a YAML mapping
    becomes); checked here, so a typo fails before the data is read."""
    if value is None or isinstance(value, dict):
        return value
    text = value.strip()
    if text.lower() in ("balanced", "none"):
        return None if text.lower() == "none" else "balanced"
    try:
        if text.startswith("{"):
            parsed = json.loads(text)
        else:  # the last "=" splits: a label may hold one ("a=b=2")
            pairs = [item.rpartition("=") for item in text.split(",")]
            if any(not sep or not k.strip() for k, sep, _ in pairs):
                raise ValueError
            parsed = {k.strip(): float(w) for k, _, w in pairs}
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: expected balanced, none, LABEL=WEIGHT,... or a JSON object"
        ) from None
    from .train.trainer import check_class_weight

    try:
        check_class_weight(parsed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return parsed


def _tokenizer_kind(value: str) -> str:
    """`--tokenizer`: BPE / WordPiece (-cased) in any case; a path as it is (a folder named BPE
    too)."""
    from .tokenizer import is_learnt_kind

    is_kind = is_learnt_kind(value.lower()) and not os.path.exists(value)
    return value.lower() if is_kind else value


ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--config",
        help="YAML file of option values; flags override it. Repeatable: later files win.",
        callback=_load_config,
        is_eager=True,
        exists=True,
        dir_okay=False,
    ),
]


# Where a saved model predicts (eval, predict, serve); training's default is auto instead.
DeviceOpt = Annotated[str, typer.Option(callback=_lower, help="cpu | cuda | cuda:N")]
# eval and predict: torch's intra-op threads, which ONNX Runtime's session takes too
InferThreadsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="CPU threads for the model (default: torch's, all cores)."),
]

# The data-reading options, the same on every command that reads labelled or unlabelled text.
TextColOpt = Annotated[list[str] | None, typer.Option(help="Text column; repeat to join several.")]
EncodingOpt = Annotated[
    str, typer.Option(help="Text encoding of the data files (e.g. cp1252, utf-16).")
]
EncodingErrorsOpt = Annotated[str, typer.Option(callback=_lower, help="strict | replace")]
OnBadOpt = Annotated[
    str, typer.Option(callback=_lower, help="raise | skip (skipped rows are counted and reported).")
]


def _load_kw(text_col, label_col, encoding, encoding_errors, on_bad) -> dict:
    """Those options as `slimtext.data.load_data` takes them."""
    return dict(text_cols=text_col, label_col=label_col, encoding=encoding,
                encoding_errors=encoding_errors, on_bad=on_bad)  # fmt: skip


def _pipe_closed() -> typer.Exit:
    """`| head`: the reader has all it wants. Say nothing, as Unix tools, and exit 141 (click
    makes a closed pipe exit 1, which the README keeps for bugs)."""
    _stdout_to_devnull()
    return typer.Exit(128 + signal.SIGPIPE)


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null once it has failed: the interpreter's last flush of what is
    still buffered failed again otherwise ("Exception ignored ...", exit 120)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # none, or not a file
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _stdout():
    """sys.stdout, or OSError when the shell closed it (`>&-`): Python makes it None, which
    click's echo writes nothing to without a word, and our own writes died on (a traceback)."""
    if sys.stdout is None:
        raise OSError(errno.EBADF, "closed")
    return sys.stdout


def _stdout_failed(e: OSError) -> typer.Exit:
    """The exit for a stdout that cannot take the results: the reader gone (EPIPE) quietly with
    141, anything else (a full disk, /dev/full, a closed stdout) with one error line and 2."""
    if isinstance(e, BrokenPipeError):
        return _pipe_closed()
    typer.echo(f"error: cannot write the output (stdout): {e.strerror or e}", err=True)
    _stdout_to_devnull()
    return typer.Exit(2)


def _need_stdout() -> None:
    """Refuse a closed stdout before the work of a command whose results all go there."""
    try:
        _stdout()
    except OSError as e:
        raise _stdout_failed(e) from None


def _emit(text: str) -> None:
    """A result on stdout (a report, JSON), flushed, so that a failure to write it is said here
    and not left to the interpreter's exit (a traceback, or "Exception ignored" and exit 120)."""
    try:
        typer.echo(text, file=_stdout())
        sys.stdout.flush()
    except OSError as e:
        raise _stdout_failed(e) from None


def _out_path(text: str) -> Path:
    """--out as typer would give it, but an empty one (an unset $OUT) refused: Path("") is
    ".", and a run in an empty folder replaced the working folder with its model. A YAML
    `out: 2024` is a number there: the folder "2024", as `--out 2024` is."""
    if not str(text).strip():
        raise typer.BadParameter("empty output path (an unset variable?)")
    return Path(str(text))


def _fail(e: Exception) -> None:
    typer.echo(f"error: {_from_file(e)}", err=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    # Evaluated by `except` while an exception is being matched: a Ctrl-C that landed inside
    # `import torch` must not import torch again here (a half-imported torch raised
    # "duplicate registrations", a traceback and exit 1, instead of exit 130).
    if isinstance(sys.exc_info()[1], KeyboardInterrupt):
        return ()
    from .artifact import ModelDirError
    from .data import DataError
    from .export import ExportError
    from .fileio import IntegrityError
    from .infer import CacheError
    from .tokenizer import TokenizerError

    # ImportError: an optional extra that is not installed (our messages name the pip command)
    return (DataError, ModelDirError, TokenizerError, IntegrityError, FileNotFoundError,
            ValueError, ImportError, CacheError, ExportError)  # fmt: skip


@app.command()
def train(
    data: Annotated[
        str,
        typer.Option(
            # not `[@SPLIT]`: rich reads a bracket opening with `@` as a markup tag and drops it
            help="Training data: a file path, a class folder, `bbc`, or `hf:NAME[:CONFIG]` "
            "(`@SPLIT` after it picks a split)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Model directory to write.", parser=_out_path)],
    valid: Annotated[
        str | None, typer.Option(help="Validation data; default: a stratified share of --data.")
    ] = None,
    test: Annotated[str | None, typer.Option(help="Test data, evaluated once at the end.")] = None,
    model: Annotated[
        str, typer.Option(callback=_lower, help="transformer | attention")
    ] = "transformer",
    epochs: int = 3,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps; overrides --epochs.")
    ] = None,
    batch_size: int = 32,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Tokens per text (or per window, see --long-text); default 128, or the "
            "positions of --init's encoder."
        ),
    ] = None,
    long_text: Annotated[
        str,
        typer.Option(
            callback=_lower,
            help="Texts longer than --max-length: truncate (keep the start) | head-tail (start "
            "and end) | chunks (every part, as overlapping windows whose logits are averaged).",
        ),
    ] = "truncate",
    precision: Annotated[
        str, typer.Option(callback=_lower, help="auto | fp32 | bf16 | fp16 (fp16: CUDA only).")
    ] = "auto",
    seed: int = 0,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in OUT.checkpoints.")
    ] = False,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default depends on --model).")
    ] = None,
    schedule: Annotated[
        str, typer.Option(callback=_lower, help="linear | cosine | constant decay after warm-up.")
    ] = "linear",
    warmup: Annotated[
        float, typer.Option(help="Warm-up: fraction of steps if < 1, else steps.")
    ] = 0.06,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    ffn_size: int | None = None,
    dropout: float | None = None,
    pooling: Annotated[
        str | None, typer.Option(callback=_lower, help="cls | mean (transformer).")
    ] = None,
    ngram_buckets: Annotated[
        int | None,
        typer.Option(
            help="attention: hashed token-bigram embeddings, fastText-style (e.g. 262144); 0 = off."
        ),
    ] = None,
    attention_size: Annotated[
        int | None, typer.Option(help="attention: width of the pooling's scores (0 = hidden).")
    ] = None,
    embeddings: Annotated[
        str | None,
        typer.Option(
            callback=_lower,
            help="bert (token + position, LayerNorm) | bag (attention: summed token and n-gram "
            "embeddings, fastText-style).",
        ),
    ] = None,
    vocab_size: int = 16000,
    tokenizer: Annotated[
        str,
        typer.Option(
            callback=_tokenizer_kind,
            help="bpe | wordpiece (trained on --data, lowercased; wordpiece's vocabulary may "
            "differ from run to run), bpe-cased | wordpiece-cased (case kept), or a "
            "tokenizer.json / HF tokenizer folder.",
        ),
    ] = "bpe",
    text_col: TextColOpt = None,
    label_col: str = "label",
    encoding: EncodingOpt = "utf-8",
    encoding_errors: EncodingErrorsOpt = "strict",
    on_bad: OnBadOpt = "raise",
    valid_fraction: Annotated[
        float,
        typer.Option(
            help="Held out of --data when no --valid is given (stratified); 0 = none: train on "
            "all of it and keep the last weights."
        ),
    ] = 0.1,
    patience: Annotated[
        int | None, typer.Option(help="Early stopping after N epochs without improvement.")
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            callback=_lower,
            help="accuracy | macro_f1 | loss: what keep-best and --patience follow on the "
            "validation data (macro_f1 for imbalanced classes).",
        ),
    ] = "accuracy",
    label_smoothing: Annotated[
        float, typer.Option(help="Label smoothing of the cross-entropy, in [0, 1).")
    ] = 0.0,
    class_weight: Annotated[
        str | None,
        typer.Option(
            callback=_class_weight,
            help="Imbalanced classes: balanced (each class weighs as much in the loss) or "
            "LABEL=W,LABEL=W (others 1); in a YAML file a mapping too.",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Checkpoint every N steps (and each epoch) into OUT.checkpoints; 0 = off."
        ),
    ] = 0,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute activations in backward to save memory.")
    ] = False,
    device: Annotated[
        str, typer.Option(callback=_lower, help="auto | cpu | cuda | cuda:N")
    ] = "auto",
    threads: int | None = None,
    strategy: Annotated[
        str,
        typer.Option(
            callback=_lower,
            help="auto | single | ddp | fsdp | tp | pp. Several processes: launch with torchrun "
            "or --nproc; auto = ddp there, single otherwise.",
        ),
    ] = "auto",  # fmt: skip
    nproc: Annotated[
        int, typer.Option(help="Launch N processes on this machine through torchrun.")
    ] = 0,
    cpu_offload: Annotated[bool, typer.Option(help="fsdp: keep shards in CPU memory.")] = False,
    tp_size: Annotated[
        int | None,
        typer.Option(help="tp: ranks per tensor-parallel group (default: all); the rest is dp."),
    ] = None,
    microbatches: Annotated[int, typer.Option(help="pp: micro-batches per batch.")] = 4,
    pp_schedule: Annotated[str, typer.Option(callback=_lower, help="pp: gpipe | 1f1b")] = "1f1b",
    init: Annotated[
        str | None,
        typer.Option(
            help="Start from a pretrained encoder: a slimtext model dir (e.g. from `slimtext "
            "pretrain`) or hf:PATH (a BERT, RoBERTa or DistilBERT folder or Hub model id). Its "
            "tokenizer and shape are used."
        ),
    ] = None,
    layer_lr_decay: Annotated[
        float, typer.Option(help="Layer-wise LR decay: lr x D^(depth from the top); 1 = off.")
    ] = 1.0,
    freeze: Annotated[
        str | None,
        typer.Option(callback=_lower, help="embeddings | embeddings+N (and the first N blocks)."),
    ] = None,
    sparse_embeddings: Annotated[
        bool,
        typer.Option(
            help="Sparse gradients and a lazy Adam for the token embeddings: a step updates "
            "only its tokens' rows (one process, or ddp over gloo)."
        ),
    ] = False,
    progress: bool = True,
    config: ConfigOpt = None,
) -> None:
    """Train a classifier and write a model directory.

    Multi-process / multi-node: `torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint
    HOST:PORT] -m slimtext train ... --strategy ddp|fsdp|tp|pp` (or `--nproc N` on one
    machine); `--strategy tp --tp-size T` on N ranks: N/T data-parallel x T tensor-parallel.
    """
    args = {k: v for k, v in locals().items() if k not in ("config", "nproc")}
    _note_epochs_ignored(epochs, max_steps)
    ctx = _dist_context(
        nproc, strategy, device, _launcher_checkpoints(out, checkpoint_every, resume)
    )
    from .train.distributed import DistributedError, shutdown

    try:
        _train(ctx=ctx, **args)
    except (*_user_errors(), DistributedError) as e:
        _fail_rank(ctx, e)
    except RuntimeError as e:
        _fail_if_peer_lost(ctx, e)
        raise
    finally:
        shutdown(ctx)


_LAUNCHED = "SLIMTEXT_NPROC_LAUNCHER"


def _fail_rank(ctx, e: Exception) -> None:
    """`_fail` on this rank. Under `--nproc` an error every rank hits (bad data, options) is
    rank 0's to say: the others wait a moment first, so that rank 0's exit is the one torchrun
    sees first and the launcher shows its line once, not also another rank's (1 run in 5).
    Under torchrun itself every rank writes to the terminal at once: no wait."""
    _let_rank_0_say_it(ctx.distributed and not ctx.is_main)
    _fail(e)


def _let_rank_0_say_it(other_rank: bool) -> None:
    """See `_fail_rank`: under `--nproc`, a rank other than 0 waits before failing."""
    if other_rank:
        _wait_under_launcher(2)


def _wait_under_launcher(seconds: float) -> None:
    """Sleep before exiting, under `--nproc` only (its launcher reports the rank that exits
    first; a rank under a plain torchrun exits at once)."""
    if os.environ.get(_LAUNCHED):
        time.sleep(seconds)


def _fail_if_peer_lost(ctx, e: RuntimeError) -> None:
    """A collective that failed because another rank died or stopped answering: one line
    saying so (gloo's traceback named neither), else nothing (the error goes on)."""
    text, why = str(e), None
    if not ctx.distributed:
        return
    if "Connection closed by peer" in text or "Connection reset by peer" in text:
        why = "another rank stopped (its own error is shown above or after this)"
    elif "timed out" in text.lower():
        import os

        wait = os.environ.get("SLIMTEXT_DIST_TIMEOUT", "600")
        why = (f"another rank stopped answering for {wait} s (SLIMTEXT_DIST_TIMEOUT); is one "
               "stuck, or stopped (SIGSTOP)?")  # fmt: skip
    if why is not None:
        typer.echo(f"error: rank {ctx.rank}: {why}", err=True)
        # Under --nproc the rank that failed first waits 2 s before it says why
        # (`_let_rank_0_say_it`); it shut the process group down on its way, so this rank
        # learned of it at once, exited, and was taken for the cause: the launcher stopped the
        # real one in its wait, its error never shown (1 run in 10 on a loaded machine). So wait
        # longer here: the launcher stops this rank as soon as the other has exited.
        _wait_under_launcher(6)
        raise typer.Exit(1)  # not 2: not a usage error every rank hits (see _culprit)


def _launcher_checkpoints(out: Path, checkpoint_every: int, resume: bool) -> Path | None:
    """The checkpoint folder the `--nproc` launcher names when it is stopped by SIGTERM."""
    return _checkpoints_of(out) if (checkpoint_every or resume) else None


def _dist_context(nproc: int, strategy: str, device: str, checkpoints: Path | None = None):
    """`--nproc N` re-runs this command under torchrun (no return); otherwise the process
    group of this rank (or the single-process context). `checkpoints`: the run's checkpoint
    folder (None: it keeps none), for the line on what a stopped run left."""
    from .train.distributed import (
        DistributedError,
        check_node_devices,
        check_strategy,
        check_torch_for,
        dist_timeout,
        init_distributed,
        launched_by_torchrun,
    )

    strategy = strategy.lower()  # --strategy DDP

    # Under torchrun already (a relaunched rank re-reads a --config that sets nproc): go on as
    # this rank instead of launching torchrun again, without end.
    if nproc and not launched_by_torchrun():
        if nproc < 0:
            _fail(ValueError(f"--nproc must be >= 1 (or 0: no torchrun), got {nproc}"))
        if strategy == "single" and nproc > 1:
            _fail(ValueError(f"--strategy single with --nproc {nproc}: choose one of them"))
        try:  # here, once, rather than as every rank's error
            check_strategy(strategy)
            check_node_devices(nproc, device)
            check_torch_for(strategy)
            dist_timeout()
        except (DistributedError, ValueError) as e:
            _fail(e)
        _relaunch_with_torchrun(nproc, checkpoints)

    try:
        return init_distributed(strategy, device)
    except (DistributedError, ValueError) as e:
        _let_rank_0_say_it(os.environ.get("RANK", "0") != "0")  # no context yet: torchrun's
        _fail(e)


def _checkpoints_of(out: Path) -> Path:
    """OUT.checkpoints, beside OUT: of the absolute path, so that `--out .` (whose name is "")
    does not put them inside the very folder the model is then written to."""
    out = Path(os.path.abspath(out))
    return out.parent / f"{out.name}.checkpoints"


def _run_checkpoints(out: Path, checkpoint_every: int, resume: bool, say) -> Path | None:
    """The run's checkpoint folder (None: it writes none), checked before anything is read."""
    from .train.checkpoint import FINISHED, check_fresh_start, list_checkpoints

    folder = _checkpoints_of(out)
    finished = (folder / FINISHED).is_file()  # its checkpoints are cleared when the run starts
    if not (checkpoint_every or resume):
        # An unfinished run's checkpoints stay beside a model written without any: a later
        # --resume would continue that run over this model. Refused, as with checkpoints.
        if not finished:
            check_fresh_start(folder, resume=False)
        return None
    if resume and not finished and not list_checkpoints(folder):
        say(f"note: no checkpoints in {folder}; starting fresh")
    return folder


@contextlib.contextmanager
def _resume_hint(ckpt: Path | None, say):
    """On Ctrl-C or SIGTERM, one line on what the stopped run left: the checkpoint --resume
    continues from, or that nothing was kept."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        if isinstance(e, KeyboardInterrupt) or e.code == 128 + signal.SIGTERM:
            _say_what_was_kept(ckpt, say)
        raise


def _say_what_was_kept(ckpt: Path | None, say) -> None:
    """The line on the checkpoint --resume continues from, or that nothing was kept."""
    from .train.checkpoint import list_checkpoints

    kept = list_checkpoints(ckpt) if ckpt is not None else []
    say(
        f"note: checkpoints kept in {ckpt} (newest {kept[-1].name}): the same command "
        "with --resume continues from there"
        if kept
        else "note: nothing of this run was kept (--checkpoint-every N keeps one "
        "every N steps, for --resume)"
    )


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    """An option's value, lower-cased, if it is one of `choices`; a usage error otherwise."""
    if value.lower() not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}")
    return value.lower()


def _relaunch_with_torchrun(nproc: int, checkpoints: Path | None = None) -> None:
    """Run this command again under torchrun's launcher (`--standalone --nproc-per-node N`),
    in this process, and exit with the ranks' status. In-process rather than exec'ing the
    torchrun command: a rank's error is then followed by one line, not by the launcher's own
    traceback and failure table.

    Only rank 0 writes to the terminal (the other ranks say nothing while all goes well, and an
    error every rank hits was printed N times); the output of the rank that failed first is
    shown after the fact. torchrun would give each rank 1 thread on a CPU and say so in a banner:
    each rank gets its share of the cores instead, unless OMP_NUM_THREADS is set."""
    import logging
    import os

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    os.environ.setdefault("OMP_NUM_THREADS", str(_rank_threads(nproc)))
    os.environ[_LAUNCHED] = "1"  # the ranks' output goes through _culprit: see _fail_rank
    # The agent logs each rank's stop as a warning and an error of its own; we say it below.
    # torch gives its loggers (created at import, above) a level of their own, WARNING: the
    # parent's level alone left "Received 15 death signal, shutting down workers" on stop.
    for name in ["torch.distributed.elastic", *logging.root.manager.loggerDict]:
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun keeps the ranks' logs in a temporary folder it never removes: use ours.
    with tempfile.TemporaryDirectory(prefix="slimtext-ranks-") as logs:
        quiet = ",".join(f"{r}:3" for r in range(1, nproc))  # stdout + stderr to a file
        args = get_args_parser().parse_args(
            ["--standalone", f"--nproc-per-node={nproc}", "--log-dir", logs]
            + (["--redirects", quiet] if quiet else [])
            + ["-m", "slimtext", *argv]
        )
        try:
            run(args)
        except ChildFailedError as e:
            rank, failure = _culprit(e.failures)
            if rank != 0:  # its output went to its log file
                for f in sorted(Path(logs).glob(f"*/attempt_*/{rank}/std*.log")):
                    lines = f.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
                    if lines:
                        typer.echo("\n".join(lines), err=True)
            code = failure.exitcode
            how = f"exit code {code}" if code >= 0 else f"signal {-code}"
            typer.echo(f"error: rank {rank} of {nproc} stopped ({how})", err=True)
            raise typer.Exit(code if code > 0 else 128 - code if code < 0 else 1) from None
        except SignalException as e:  # Ctrl-C or SIGTERM of this launcher: the ranks stop too
            typer.echo(f"error: stopped by signal {int(e.sigval)}", err=True)
            # Ctrl-C reaches the ranks as KeyboardInterrupt and rank 0 says what was kept;
            # SIGTERM (a scheduler's stop) kills them at once (torchrun's ranks keep its
            # default action), so the line the README promises is said here.
            if int(e.sigval) == signal.SIGTERM:
                _say_what_was_kept(checkpoints, lambda msg: typer.echo(msg, err=True))
            raise typer.Exit(128 + int(e.sigval)) from None
    raise typer.Exit(0)


def _culprit(failures: dict) -> tuple[int, object]:
    """The rank whose failure to report. A usage error (exit code 2) on rank 0 is one every
    rank hits, already on the terminal; otherwise the earliest, and among ranks that stopped
    in the same second (torchrun's timestamps are whole seconds) another rank before rank 0:
    rank 0 most often died of the others' closed connections, and its gloo error hid the real
    one."""
    if 0 in failures and failures[0].exitcode == 2:
        return 0, failures[0]
    rank = min(failures, key=lambda r: (failures[r].timestamp, r == 0, r))
    return rank, failures[rank]


def _rank_threads(nproc: int, cores: int | None = None) -> int:
    """Intra-op threads for each of `nproc` ranks on this machine: an even share of the cores
    this process may run on, at least 1."""
    if cores is None:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, nproc))


def _train(
    *, ctx, data, out, valid, test, vocab_size, tokenizer, text_col, label_col, encoding,
    encoding_errors, on_bad, valid_fraction, resume, checkpoint_every, progress, model, **params,
) -> None:  # fmt: skip
    from .api import TextClassifier, as_dataset
    from .data import DataError, check_labels_seen
    from .metrics import format_report

    load_kw = _load_kw(text_col, label_col, encoding, encoding_errors, on_bad)
    say = (lambda msg: typer.echo(msg, err=True)) if ctx.is_main else (lambda msg: None)
    from .artifact import check_save_target

    # an --out that would be refused must fail now, not after training
    check_save_target(out, reads=(params.get("init"),))
    params = {k: v for k, v in params.items() if v is not None}
    params["checkpoint_every"] = checkpoint_every
    clf = TextClassifier(model=model, tokenizer=tokenizer, vocab_size=vocab_size,
                         valid_fraction=valid_fraction, verbose=True, **params)  # fmt: skip
    clf._check_init()  # before the data: an --init that cannot start this training
    from .train.precision import resolve_precision

    with warnings.catch_warnings():  # (fit says them) fp16 on a CPU: before the data is read
        warnings.simplefilter("ignore")
        resolve_precision(clf.train_config().precision, ctx.device)
    ckpt = _run_checkpoints(out, checkpoint_every, resume, say)
    clf._check_tokenizer(resume, ckpt)  # (--resume with no checkpoint reads it: checked too)
    # All data is read (and its report shown) before training: a missing or broken test file
    # must not surface only after an hour of training.
    # Every rank reads and checks them, so that a bad file stops all ranks alike.
    from .data.sources import load_kw_per_source

    datasets = {"train": data, "valid": valid, "test": test}
    for k, v in datasets.items():  # an unset $DATA: "" was dropped, and fit(None) crashed
        if v is not None and not str(v).strip():
            raise DataError(f"--{k if k != 'train' else 'data'}: empty path")
    kws = load_kw_per_source(datasets, load_kw)
    loaded = {k: as_dataset(v, **kws[k]) for k, v in datasets.items() if v}
    for k, ds in loaded.items():
        say(f"{k}: {ds.report()}")
    train_ds, valid_ds, test_ds = (loaded.get(k) for k in ("train", "valid", "test"))
    if test_ds is not None:  # what evaluating after training would refuse, refused now
        if test_ds.labels is None:
            raise DataError(f"{test_ds.source}: --test data has no labels")
        check_labels_seen(train_ds, test_ds)
    from .train.checkpoint import clear_finished, exclusive, mark_finished, unmark_finished
    from .train.distributed import barrier

    with (
        _resume_hint(ckpt, say),
        exclusive(ckpt, ctx, out=out),
        tempfile.TemporaryDirectory() as tmp,
    ):
        if ctx.is_main:
            clear_finished(ckpt, say, everything=True)  # OUT.checkpoints: ours alone
        barrier(ctx)  # the other ranks look for checkpoints only once they are cleared
        run_dir = ckpt / "run" if ckpt is not None else Path(tmp)
        t0 = time.perf_counter()
        clf.fit(train_ds, valid_ds, run_dir=run_dir, checkpoint_dir=ckpt, resume=resume,
                dist=ctx, progress=progress)  # fmt: skip
        if ctx.is_main:
            unmark_finished(ckpt)  # until the model is saved: --resume must still find them
        r = clf.result_
        say(
            f"trained {r.steps} steps"
            + (
                f" ({r.steps - r.resumed_at} after resuming at {r.resumed_at})"
                if r.resumed_at
                else ""
            )
            + f" in {time.perf_counter() - t0:.1f}s"
            # samples/s is over the optimizer steps alone (of both runs, when resumed): the wall
            # time above also holds the tokenizer, evaluations, checkpoints and saving
            + f" (steps {r.train_seconds:.1f}s{' in all' if r.resumed_at else ''}: "
            f"{r.samples_per_second:.0f} samples/s, {r.precision} on {r.device}"
            + (f", {ctx.strategy} x{ctx.world_size})" if ctx.distributed else ")")
            + "; peak memory "
            + (
                " / ".join(f"{m:.0f}" for m in r.peak_rss_mb) + " MiB per rank"
                if len(r.peak_rss_mb) > 1
                else f"{sum(r.peak_rss_mb):.0f} MiB"
            )  # fmt: skip
        )
        if not ctx.is_main:  # rank 0 evaluates and writes the model directory
            return
        metrics = {}
        if test_ds is not None:
            if params.get("threads"):  # --threads holds for the whole command, not only fit
                import torch

                torch.set_num_threads(params["threads"])
            metrics["test"] = clf.evaluate(test_ds)
        clf.save(out, metrics=metrics)  # before the report: a closed stdout must not lose it
        mark_finished(ckpt, out)
    typer.echo(f"model directory: {out}", err=True)
    if "test" in metrics:
        _emit(format_report(metrics["test"]))


@app.command()
def pretrain(
    data: Annotated[
        str,
        typer.Option(
            help="Unlabelled text: a .txt file (one document a line), a CSV/JSONL/Parquet text "
            "column, or any labelled source (labels are ignored)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="Model directory to write (use with train --init).", parser=_out_path),
    ],
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps; overrides --epochs.")
    ] = None,
    epochs: int = 3,
    mask_prob: Annotated[
        float, typer.Option(help="Share of tokens predicted (BERT: 0.15).")
    ] = 0.15,
    pack: Annotated[
        bool,
        typer.Option(
            help="Concatenate short documents up to --max-length; attention stays within each."
        ),
    ] = False,
    whole_word: Annotated[
        bool,
        typer.Option(help="Mask whole words (all their sub-word tokens) instead of sub-words."),
    ] = False,
    max_length: Annotated[int, typer.Option(help="Tokens per row (and positions).")] = 128,
    long_text: Annotated[
        str,
        typer.Option(
            callback=_lower,
            help="Documents longer than --max-length: chunks (read whole, as several windows) | "
            "truncate (their start only) | head-tail.",
        ),
    ] = "chunks",
    batch_size: int = 32,
    lr: float = 5e-4,
    schedule: Annotated[
        str, typer.Option(callback=_lower, help="linear | cosine | constant")
    ] = "linear",
    warmup: Annotated[
        float, typer.Option(help="Warm-up: fraction of steps if < 1, else steps.")
    ] = 0.06,
    weight_decay: float = 0.01,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    precision: Annotated[
        str, typer.Option(callback=_lower, help="auto | fp32 | bf16 | fp16")
    ] = "auto",
    seed: int = 0,
    vocab_size: int = 16000,
    tokenizer: Annotated[
        str,
        typer.Option(
            callback=_tokenizer_kind,
            help="bpe | wordpiece (trained on --data, lowercased), bpe-cased | wordpiece-cased "
            "(case kept), or a tokenizer file/folder.",
        ),
    ] = "bpe",
    hidden_size: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    ffn_size: int | None = None,
    dropout: float | None = None,
    text_col: TextColOpt = None,
    encoding: EncodingOpt = "utf-8",
    encoding_errors: EncodingErrorsOpt = "strict",
    on_bad: OnBadOpt = "raise",
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in OUT.checkpoints.")
    ] = False,
    checkpoint_every: Annotated[
        int, typer.Option(help="Checkpoint every N steps (and each epoch); 0 = off.")
    ] = 0,
    device: Annotated[
        str, typer.Option(callback=_lower, help="auto | cpu | cuda | cuda:N")
    ] = "auto",
    threads: int | None = None,
    strategy: Annotated[
        str,
        typer.Option(
            callback=_lower,
            help="auto | single | ddp | fsdp (several processes: torchrun/--nproc).",
        ),
    ] = "auto",
    nproc: Annotated[
        int, typer.Option(help="Launch N processes on this machine through torchrun.")
    ] = 0,
    progress: bool = True,
    config: ConfigOpt = None,
) -> None:
    """Masked-LM pretraining of a transformer encoder on unlabelled text (BERT's 80/10/10
    masking, new masks each epoch). Fine-tune the result with `slimtext train --init OUT`.
    Several processes: `--nproc N` or `torchrun ... -m slimtext pretrain ... --strategy ddp|fsdp`
    (`--batch-size` is per process)."""
    params = {k: v for k, v in locals().items()
              if k not in ("data", "out", "text_col", "resume", "checkpoint_every", "progress",
                           "config", "tokenizer", "vocab_size", "mask_prob", "pack", "nproc",
                           "whole_word", "encoding", "encoding_errors", "on_bad")
              and v is not None}  # fmt: skip
    _note_epochs_ignored(epochs, max_steps)
    from .pretrain import check_strategy_for_pretrain

    try:  # before any process starts: `--nproc 2 --strategy pp` read the corpus, then failed
        check_strategy_for_pretrain(strategy)
    except ValueError as e:
        _fail(e)
    ctx = _dist_context(
        nproc, strategy, device, _launcher_checkpoints(out, checkpoint_every, resume)
    )
    from .train.distributed import DistributedError, shutdown

    try:
        from .artifact import check_save_target
        from .data import load_data
        from .pretrain import check_options
        from .pretrain import pretrain as run_pretrain

        check_save_target(out)  # fail now rather than after pretraining
        say = (lambda msg: typer.echo(msg, err=True)) if ctx.is_main else (lambda msg: None)
        ckpt = _run_checkpoints(out, checkpoint_every, resume, say)
        # and bad options (--threads 0, --batch-size 0, a missing --tokenizer file) before the
        # corpus is read
        check_options(tokenizer=tokenizer, vocab_size=vocab_size, mask_prob=mask_prob,
                      pack=pack, whole_word=whole_word, resume=resume, checkpoint_dir=ckpt,
                      **params)  # fmt: skip
        t0 = time.perf_counter()
        kw = _load_kw(text_col, None, encoding, encoding_errors, on_bad)
        ds = load_data(data, require_labels=False, **kw)
        if ctx.is_main:
            typer.echo(f"data: {ds.report()}", err=True)  # lines skipped or repaired, if any
        from .train.checkpoint import clear_finished, exclusive, mark_finished
        from .train.distributed import barrier

        with _resume_hint(ckpt, say), exclusive(ckpt, ctx, out=out):
            if ctx.is_main:
                clear_finished(ckpt, lambda msg: typer.echo(msg, err=True), everything=True)
            barrier(ctx)
            r = run_pretrain(ds, out, tokenizer=tokenizer, vocab_size=vocab_size,
                             mask_prob=mask_prob, pack=pack, whole_word=whole_word,
                             run_dir=ckpt / "run" if ckpt is not None else None,
                             checkpoint_dir=ckpt, resume=resume, progress=progress and ctx.is_main,
                             messages=ctx.is_main, checkpoint_every=checkpoint_every, dist=ctx,
                             **params)  # fmt: skip
            if ctx.is_main:
                mark_finished(ckpt, out)
    except (*_user_errors(), DistributedError) as e:
        _fail_rank(ctx, e)
    except RuntimeError as e:
        _fail_if_peer_lost(ctx, e)
        raise
    finally:
        shutdown(ctx)
    if not ctx.is_main:  # rank 0 wrote the model directory
        return
    info = json.loads((out / "config.json").read_text(encoding="utf-8"))["train"]["pretrain"]
    loss = info["final_loss"] if info["final_loss"] is not None else float("nan")
    windows = ""
    if info.get("long_texts"):  # said, since a long document costs several rows
        windows = (f"{info['long_texts']} longer than --max-length, read as {info['windows']} "
                   "windows in all; ")  # fmt: skip
    resumed = (
        f" ({r.steps - r.resumed_at} after resuming at {r.resumed_at})" if r.resumed_at else ""
    )
    typer.echo(
        f"pretrained {r.steps} steps{resumed} in {time.perf_counter() - t0:.1f}s on "
        f"{info['texts']} texts "
        f"({windows}final MLM loss {loss:.4f}, {r.precision} on {r.device}"
        + (f", {ctx.strategy} x{ctx.world_size})" if ctx.distributed else ")"),
        err=True,
    )
    typer.echo(f"model directory: {out}", err=True)


@app.command("eval")
def eval_(
    model_dir: Annotated[Path, typer.Argument(help="A slimtext model directory.")],
    data: Annotated[str, typer.Option(help="Labelled data: path, `bbc@test`, `hf:NAME@SPLIT`.")],
    json_out: Annotated[
        bool, typer.Option("--json/--no-json", help="Print one JSON object.")
    ] = False,
    text_col: TextColOpt = None,
    label_col: str = "label",
    encoding: EncodingOpt = "utf-8",
    encoding_errors: EncodingErrorsOpt = "strict",
    on_bad: OnBadOpt = "raise",
    backend: Annotated[
        str,
        typer.Option(
            callback=_lower, help="torch | torch-bf16 | compile[-bf16] | onnxruntime[-int8] | auto"
        ),
    ] = "torch",
    batch_size: int = 64,
    device: DeviceOpt = "cpu",
    threads: InferThreadsOpt = None,
    progress: Annotated[bool, typer.Option(help="A progress bar on stderr (long data).")] = True,
    config: ConfigOpt = None,
) -> None:
    """Evaluate a model directory on labelled data."""
    _need_stdout()
    _set_threads(threads)
    try:
        from .api import TextClassifier, as_dataset
        from .metrics import format_report

        clf = TextClassifier.load(model_dir, backend=backend, batch_size=batch_size, device=device)
        for note in clf._predictor.auto_notes():
            typer.echo(f"note: {note}", err=True)
        ds = as_dataset(data, **_load_kw(text_col, label_col, encoding, encoding_errors, on_bad))
        typer.echo(f"data: {ds.report()}", err=True)  # rows skipped or repaired, if any
        rep = clf.evaluate(ds, progress=progress)
    except (*_user_errors(), ImportError) as e:
        _fail(e)
    if json_out:  # with the rows the data's reading skipped (--on-bad skip), for scripts
        _emit(json.dumps({**rep, "skipped": dict(ds.skipped)}))
    else:
        _emit(format_report(rep))


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A slimtext model directory.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="Plain text, one text per line ('-' = stdin; .gz read through gzip)."),
    ] = None,
    encoding: Annotated[
        str, typer.Option(help="Text encoding of --file or stdin (e.g. cp1252, utf-16).")
    ] = "utf-8",
    batch_size: int = 64,
    backend: Annotated[
        str,
        typer.Option(
            callback=_lower, help="torch | torch-bf16 | compile[-bf16] | onnxruntime[-int8] | auto"
        ),
    ] = "torch",
    device: DeviceOpt = "cpu",
    top_k: Annotated[
        int | None,
        typer.Option(help="Only the K most likely labels in probs, best first (all by default)."),
    ] = None,
    threads: InferThreadsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print one JSON line per text: {"label": ..., "probs": {label: p}}. Reads stdin when no
    text and no file is given; from a file or stdin, one line per text (UTF-8 unless
    --encoding), and an empty line gives {"label": null, "probs": null, "error": ...} so that
    output lines stay aligned with input lines."""
    if texts and file is not None:
        _fail(ValueError("give texts or --file, not both"))
    if top_k is not None and top_k < 1:
        _fail(ValueError(f"--top-k must be >= 1, got {top_k}"))
    from_stdin = not texts and (file is None or str(file) == "-")
    if from_stdin and sys.stdin is None:  # `<&-`: Python makes it None (a traceback)
        _fail(ValueError("no texts: stdin is closed; give texts, --file FILE or pipe them in"))
    if file is not None and not from_stdin:
        _refuse_data_file(file)
    _need_stdout()
    from .data.sources import text_codec

    try:
        text_codec(encoding)
    except ValueError as e:
        _fail(ValueError(f"--{e}"))
    _set_threads(threads)
    try:
        from .infer import load

        pred = load(model_dir, backend=backend, batch_size=batch_size, device=device)
    except (*_user_errors(), ImportError) as e:
        _fail(e)
    for note in pred.auto_notes():
        typer.echo(f"note: {note}", err=True)
    if top_k is not None and top_k > len(pred.labels):  # as serve refuses it
        _fail(ValueError(f"--top-k is {top_k} but the model has {len(pred.labels)} labels"))
    try:
        if texts:
            _predict_lines(pred, _argument_texts(texts), "argument", top_k=top_k)
        elif not from_stdin:
            # a .gz file read through gzip, as the data loaders read one
            with open(file, "rb") as f:
                gz = file.suffix.lower() == ".gz"
                _predict_stream(pred, f, str(file), encoding, top_k, gz=gz)
        else:
            _predict_stream(pred, sys.stdin.buffer, "<stdin>", encoding, top_k)
    except (OSError, EOFError, ValueError) as e:  # (EOFError, zlib.error: a truncated .gz)
        source = file if file is not None and str(file) != "-" else "<stdin>"
        _fail(e if isinstance(e, ValueError) else ValueError(f"{source}: {e}"))


def _predict_stream(pred, f, name: str, encoding: str, top_k: int | None, gz: bool = False) -> None:
    """Answer the lines of binary stream `f`; `gz`: its bytes are gzip-compressed."""
    if not _is_live(f):
        f = gzip.GzipFile(fileobj=f) if gz else f
        _predict_lines(pred, _text_lines(f, name, encoding), "line", top_k=top_k)
        return
    # A live input is read by a thread (see _arrivals), through its own descriptor: blocked in a
    # read of stdin's buffer at exit (SIGTERM, a closed output), it held a lock the interpreter's
    # shutdown needed, and Python aborted (exit 134). This one is never closed: exit does it.
    # (Decompressed from there too: a .gz named pipe was read as its raw gzip bytes. Unbuffered
    # below gzip, whose reads of a buffered file wait for 8 KiB rather than the next line.)
    own = open(os.dup(f.fileno()), "rb", buffering=0 if gz else -1)  # noqa: SIM115
    own = gzip.GzipFile(fileobj=own) if gz else own
    _predict_lines(pred, _text_lines(own, name, encoding), "line", top_k=top_k, live=True)


def _refuse_data_file(file: Path) -> None:
    """--file reads plain text, a text a line: a data file's header, quoting, JSON and other
    columns were each classified as text, without a word."""
    from .data.sources import _CSV_EXTS, _JSONL_EXTS, _extension

    ext = _extension(file)
    if ext in _CSV_EXTS or ext in _JSONL_EXTS or ext == ".parquet":
        _fail(ValueError(
            f"{file}: --file reads plain text, one text a line, and this is a {ext} data file "
            f"(its header, quoting or JSON would be classified as text): `slimtext eval "
            f"MODEL --data {file}` scores labelled data; to classify its texts, write them one "
            f"a line to a .txt file (or pipe the file in, `< {file}`, to classify each raw line)"
        ))  # fmt: skip


def _set_threads(threads: int | None) -> None:
    if threads is not None:  # before the model loads: an ONNX Runtime session takes the count
        import torch

        torch.set_num_threads(threads)


def _text_lines(f, name: str, encoding: str = "utf-8"):
    """(line number, text) of a binary stream of lines: a BOM and the line ending (LF or CRLF)
    removed, as the data loaders do; undecodable bytes are an error naming the line."""
    from .data.sources import _is_wide, _wide_bom

    codec = codecs.lookup(encoding)
    if not hasattr(f, "peek"):  # (a test runner's BytesIO stdin)
        f = io.BufferedReader(f)
    if wide := _wide_bom(f.peek(4)[:4], codec):
        codec, encoding = codecs.lookup(wide), wide  # its byte-order mark says UTF-16 (or 32)
    # the way out, where the user has not already taken it
    hint = "; pass --encoding (e.g. cp1252, utf-16)" if codec.name == "utf-8" else ""
    if _is_wide(codec):
        # "\n" is not one byte here: decoded as it arrives (a pipe's texts are answered as
        # they come), an undecodable spot marked so that the lines before it are answered
        yield from _wide_text_lines(f, name, encoding)
        return
    first = "utf-8-sig" if codec.name == "utf-8" else encoding
    for n, raw in enumerate(_lines_to_eof(f), start=1):
        try:
            line = raw.decode(first if n == 1 else encoding)
        except UnicodeDecodeError as e:
            shown = "UTF-8" if codec.name == "utf-8" else encoding
            if n == 1 and raw.startswith(b"\x1f\x8b"):  # gzip's magic bytes
                hint = "; it is gzip-compressed: decompress it first (zcat FILE | ...)"
            msg = f"{name}:{n}: not valid {shown} ({e.reason} at byte {e.start}){hint}"
            raise ValueError(msg) from None
        # a BOM on a later line too: `cat a.txt b.txt` puts b's BOM at the start of a line
        yield n, line.rstrip("\r\n").removeprefix("\ufeff")


def _lines_to_eof(f):
    """The lines of `f`, as iterating it gives them, but ending at a last line without "\n": on
    a terminal that line is ended by Ctrl-D, and reading on after it waited for a third one."""
    while raw := f.readline():
        yield raw
        if not raw.endswith(b"\n"):
            return


_BAD = "\U0010fffe"  # a noncharacter: where a wide text_lines decoder met undecodable bytes
codecs.register_error("slimtext.mark", lambda e: (_BAD, e.end))


def _wide_text_lines(f, name: str, encoding: str):
    decoder = codecs.getincrementaldecoder(encoding)("slimtext.mark")
    read = getattr(f, "read1", f.read)
    pending, n = "", 0
    while True:
        chunk = read(1 << 16)
        pending += decoder.decode(chunk, final=not chunk)
        *lines, pending = pending.split("\n")
        if not chunk and pending:
            lines.append(pending)
        for line in lines:
            n += 1
            if _BAD in line:
                raise ValueError(f"{name}:{n}: not valid {encoding}")
            yield n, line.removeprefix("\ufeff").rstrip("\r")
        if not chunk:
            return


def _argument_texts(texts: list[str]):
    """(n, text) per argument; one whose bytes were not UTF-8 (Python keeps them as lone
    surrogates) stops the run there, named by its argument number: the model's own check
    counted only the non-blank texts of the current chunk, so it named the wrong one."""
    from .data import DataError
    from .data.dataset import surrogate_at

    for n, t in enumerate(texts, start=1):
        if (at := surrogate_at(t)) is not None:
            raise DataError(
                f"argument {n} is not valid UTF-8 (at character {at}); pass UTF-8 "
                "text, or the texts in a file with --file and --encoding"
            )
        yield n, t


def _write(line: str | None) -> None:
    """A line to stdout (None: flush). An error there is the output's, said so: it was blamed on
    the input file, or on "None" when the texts came from stdin."""
    try:
        _stdout().write(line) if line is not None else _stdout().flush()
    except OSError as e:
        raise _stdout_failed(e) from None


def _is_live(f) -> bool:
    """True for a pipe, a terminal or a socket: lines may come one at a time, and each should
    be answered as it comes rather than when 1,024 have gathered or the input ends."""
    try:
        return not stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's BytesIO)
        return False


def _arrivals(numbered, chunk: int):
    """Lists of the lines of a live input as they arrive: waits for one, then takes what else
    is already there (at most `chunk`). A thread reads, so a slow writer (a person typing, a
    `tail -f`) gets each answer at once, and a fast one still fills whole batches."""
    q: queue.Queue = queue.Queue(maxsize=2 * chunk)  # bounded: a flood waits for the model
    end = object()

    def read() -> None:
        try:
            for item in numbered:
                q.put(item)
            q.put(end)
        except BaseException as e:  # handed over in order: the lines before it are answered
            q.put(e)

    threading.Thread(target=read, name="slimtext-predict-reader", daemon=True).start()
    while True:
        items = [q.get()]
        while len(items) < chunk and items[-1] is not end:
            if isinstance(items[-1], BaseException):
                break
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        last = items[-1]
        done = last is end or isinstance(last, BaseException)
        if done:
            items.pop()
        if items:
            yield items
        if isinstance(last, BaseException):
            raise last
        if done:
            return


def _batches(numbered, chunk: int):
    batch: list = []
    try:
        for item in numbered:
            batch.append(item)
            if len(batch) >= chunk:
                yield batch
                batch = []
    except Exception:
        if batch:  # the lines before a bad one are answered, then the error
            yield batch
        raise
    if batch:
        yield batch


def _predict_lines(
    pred, numbered, unit: str, chunk: int = 1024, top_k: int | None = None, live: bool = False
) -> None:
    """One JSON line per (n, text) of `numbered`, in input order, in batches of up to `chunk`
    (constant memory on big files); a `live` input is answered as its lines arrive."""
    from .data.dataset import is_blank

    empty: list[int] = []
    labels = pred.labels

    def answer(batch: list[tuple[int, str]]) -> None:
        blank = [is_blank(t) for _, t in batch]
        real = [t for (_, t), b in zip(batch, blank, strict=True) if not b]
        rows = iter(pred.predict_proba(real)) if real else iter(())
        for (n, _), b in zip(batch, blank, strict=True):
            if b:
                empty.append(n)
                out = {"label": None, "probs": None, "error": f"empty text ({unit} {n})"}
            else:
                row = next(rows)
                i = int(row.argmax())
                # all labels in model order, or (--top-k: 2,000 labels made 94 KB a line) the
                # K most likely, best first
                # (stable: of tied labels the first, as argmax takes it, comes first)
                keep = (
                    range(len(labels)) if top_k is None else (-row).argsort(kind="stable")[:top_k]
                )
                out = {
                    "label": labels[i],
                    "probs": {labels[j]: round(float(row[j]), 6) for j in keep},
                }
            _write(json.dumps(out, ensure_ascii=False) + "\n")
        _write(None)

    # A bad line (undecodable bytes) stops the run where it is met: the lines before it are
    # still answered, so the output is every result up to the line the error names.
    for batch in (_arrivals if live else _batches)(numbered, chunk):
        answer(batch)
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        typer.echo(f"note: {len(empty)} empty text(s) not classified ({unit} {shown})", err=True)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Where to write the demo model directory.", parser=_out_path)
    ] = Path("slimtext-demo"),
    model: Annotated[
        str, typer.Option(callback=_lower, help="transformer | attention")
    ] = "transformer",
    progress: bool = True,
    config: ConfigOpt = None,
) -> None:
    """Train on the built-in BBC News data (2,225 articles, 5 topics) and print the test report."""
    from .demo import run_demo

    try:
        run_demo(out, model=model, progress=progress, emit=_emit)
    except BrokenPipeError:  # `slimtext demo | head`: 141, as every other command
        raise _pipe_closed() from None
    except _user_errors() as e:
        _fail(e)


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="A slimtext model directory.")],
    out: Annotated[
        str | None,  # not Path: a trailing "/" (a folder to create) must reach export_onnx
        typer.Option(
            help="Write here (a file, or a folder for model.onnx: an existing one, or a path "
            "ending in /) instead of MODEL_DIR/model.onnx; --int8 writes NAME.int8.onnx beside it."
        ),
    ] = None,
    format: Annotated[
        str, typer.Option(callback=_lower, help="onnx (the only format so far).")
    ] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = 18,
    optimize: Annotated[bool, typer.Option(help="Save the ONNX Runtime-optimised graph.")] = True,
    exporter: Annotated[
        str,
        typer.Option(
            callback=_lower,
            help="auto | fused (transformer in ORT's fused ops) | dynamo | torchscript",
        ),
    ] = "auto",
    mask_dtype: Annotated[
        str, typer.Option(callback=_lower, help="attention_mask input type: bool | int64")
    ] = "bool",
    atol: Annotated[float, typer.Option(help="Largest allowed |logits - PyTorch|.")] = 1e-4,
    int8: Annotated[
        bool, typer.Option(help="Also write model.int8.onnx (dynamic int8 quantisation).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Export a model directory to ONNX, checked against PyTorch on padded batches."""
    if out is not None and not out.strip():  # an unset $OUT: the working folder
        _fail(ValueError("--out: empty output path (an unset variable?)"))
    if format != "onnx":
        _fail(ValueError(f"--format {format!r}: only 'onnx' is supported"))

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    try:
        from .export import ExportError, export_onnx, quantize_onnx
    except ImportError as e:
        _fail(ImportError(f"{e}; install the extra: pip install 'slimtext[onnx]'"))
    try:
        if int8 and out:  # a foreign NAME.int8.onnx is refused before NAME.onnx is written
            from .export import INT8_FILE, ONNX_FILE, _target

            first, _ = _target(Path(model_dir), out, ONNX_FILE)
            _target(Path(model_dir), _int8_beside(first), INT8_FILE)
        path = export_onnx(model_dir, out, opset=opset, optimize=optimize, exporter=exporter,
                           mask_dtype=mask_dtype, atol=atol, log=log)  # fmt: skip
        if int8:
            quantize_onnx(model_dir, _int8_beside(path) if out else None,
                          exporter=exporter, mask_dtype=mask_dtype, opset=opset,
                          log=log)  # fmt: skip
    except (*_user_errors(), ImportError, ExportError, OSError) as e:
        if isinstance(e, OSError) and not e.filename and e.strerror:  # e.g. a full disk
            e = OSError(e.errno, f"{e.strerror}, exporting {model_dir} to {out or model_dir}")
        _fail(e)


def _int8_beside(path: Path) -> Path:
    """DIR/x.onnx -> DIR/x.int8.onnx (model.onnx -> model.int8.onnx)."""
    return path.with_name(f"{path.stem}.int8.onnx")


@app.command("compress")
def compress_(
    teacher_dir: Annotated[
        Path, typer.Argument(help="Model directory to compress (the teacher unless --teacher).")
    ],
    data: Annotated[str, typer.Option(help="Training data for distillation and fine-tuning.")],
    out: Annotated[Path, typer.Option(help="Model directory to write.", parser=_out_path)],
    recipe: Annotated[
        str,
        typer.Option(
            help="Steps, e.g. 'distill:layers=2,prune:heads=0.5,ffn=0.5,"
            "quantize:int8-dynamic,max_drop=0.01'; 'quantize:int8-dynamic,qat=1' fine-tunes "
            "quantization-aware; 'sparsity:N:M' keeps the N largest of every M weights (2:4: half)."
        ),
    ] = "distill,prune:heads=0.5,ffn=0.5,quantize:int8-dynamic",
    valid: Annotated[
        str | None, typer.Option(help="Validation data; default: a stratified share of --data.")
    ] = None,
    test: Annotated[
        str | None, typer.Option(help="Data the report is measured on; default: validation.")
    ] = None,
    transfer: Annotated[
        str | None,
        typer.Option(
            help="Extra unlabelled texts for distillation (labels ignored): trained on the "
            "teacher's soft labels alone; the --data rows keep their label term (alpha)."
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Teacher for distillation with its own tokenizer: 'hf:PATH' (a Hugging Face "
            "sequence-classification folder or Hub model id) or a slimtext model directory; "
            "same labels."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs of each distill step (prune, lowrank and finetune steps train for "
            "their own finetune=N / epochs=N, default 1)."
        ),
    ] = None,
    batch_size: int = 32,
    lr: float | None = None,
    threads: int | None = None,
    speed: Annotated[bool, typer.Option(help="Measure latency and throughput.")] = True,
    text_col: TextColOpt = None,
    label_col: str = "label",
    encoding: EncodingOpt = "utf-8",
    encoding_errors: EncodingErrorsOpt = "strict",
    on_bad: OnBadOpt = "raise",
    progress: bool = True,
    config: ConfigOpt = None,
) -> None:
    """Compress a model directory by a recipe; writes OUT with compression_report.md/.json."""
    try:
        from .compress.recipe import compress

        train_cfg = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                       "threads": threads}.items() if v is not None}  # fmt: skip
        if threads:  # every step's evaluation and teacher pass too, not only its training
            import torch

            torch.set_num_threads(threads)
        load_kw = _load_kw(text_col, label_col, encoding, encoding_errors, on_bad)
        compress(teacher_dir, data, out, recipe, valid=valid, test=test, transfer=transfer,
                 teacher=teacher, train_config=train_cfg, speed=speed, progress=progress,
                 log=lambda s: typer.echo(s, err=True), load_kw=load_kw)  # fmt: skip
    except _user_errors() as e:
        _fail(e)
    _emit((out / "compression_report.md").read_text(encoding="utf-8"))


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Model directory to serve.")],
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")] = 8000,
    backend: Annotated[
        str,
        typer.Option(
            callback=_lower, help="auto | torch | torch-bf16 | compile[-bf16] | onnxruntime[-int8]"
        ),
    ] = "auto",
    device: DeviceOpt = "cpu",
    # min= on the limits: click names the option (--max-queue), the server's own check its
    # Python name (max_queue), which a CLI user never typed
    max_batch_size: Annotated[int, typer.Option(min=1, help="Most texts per model call.")] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long the first queued text waits for others to join its batch "
            "(0: batch only what queued while the model was busy).",
        ),
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Texts waiting at most; more get 503 + Retry-After.")
    ] = 1024,
    # The three request limits had no help (two of them none at all): what each refuses, and how
    max_texts_per_request: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most texts in one request; more get 413. Default: min(256, --max-queue)."
        ),
    ] = None,
    max_text_chars: Annotated[
        int, typer.Option(min=1, help="Longest text, in characters; a longer one gets 413.")
    ] = 10_000,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body, in bytes; a larger one gets 413.")
    ] = 4 * 1024 * 1024,
    workers: Annotated[
        int, typer.Option(help="Worker processes, each with its own copy of the model.")
    ] = 1,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per worker (default: torch's, all cores).")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding a bearer key for /v1/* and /metrics."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Let browser pages from this origin call the API; repeatable."),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            callback=lambda v: _one_of(v, ("debug", "info", "warning", "error")),
            help="debug | info | warning | error",
        ),  # fmt: skip
    ] = "info",
    config: ConfigOpt = None,
) -> None:
    """Serve a model directory over HTTP: POST /v1/classify, a web page at /, docs at /docs."""
    try:
        from .serve import run
    except ImportError as e:
        hint = (
            ""
            if "pip install" in str(e)
            else "; install the server extra: pip install 'slimtext[serve]'"
        )
        _fail(ImportError(f"{e}{hint}"))
    try:
        run(
            model_dir, host, port, backend=backend, device=device,
            max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
            max_texts_per_request=max_texts_per_request, max_text_chars=max_text_chars,
            max_body_bytes=max_body_bytes, api_key_env=api_key_env,
            cors_origins=cors_origin or [], workers=workers, threads=threads,
            log_level=log_level,
        )  # fmt: skip
    except _user_errors() as e:
        _fail(e)


@app.command()
def bench(
    model_dirs: Annotated[list[Path], typer.Argument(help="One or more model directories.")],
    data: Annotated[str, typer.Option(help="Labelled test data: path, `bbc@test`, `hf:...`.")],
    out: Annotated[
        Path,
        typer.Option(help="Folder for report.json, report.md, pareto.png.", parser=_out_path),
    ],
    train: Annotated[
        str | None,
        typer.Option(help="Training data for the fastText / TF-IDF peers (and HF Trainer)."),
    ] = None,
    peers: Annotated[
        str,
        typer.Option(
            help="Comma-separated: hf, ort, ort-opt (ORT-optimised HF graph), fasttext, tfidf"
            " ('' for none)."
        ),
    ] = "hf,ort,fasttext,tfidf",
    backends: Annotated[
        str | None,
        typer.Option(
            help="torch,torch-bf16,compile,compile-bf16,onnxruntime,onnxruntime-int8 "
            "(default: all; '' for none: peers only)"
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(
            help="Seconds for the whole run: fewer texts are measured to fit it. Each entry's "
            "start-up (a fresh process, loading, export) is not shortened, so a small budget can "
            "be overrun by a few seconds; the report gives the time taken."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch / ONNX Runtime threads.")] = None,
    max_test: Annotated[int | None, typer.Option(help="Use at most N test texts.")] = None,
    isolate: Annotated[
        bool, typer.Option(help="Measure each entry in a fresh process (true peak memory).")
    ] = True,
    repeat: Annotated[
        int,
        typer.Option(help="Measure every entry N times, in turns; report the medians."),
    ] = 1,
    text_col: list[str] | None = None,
    label_col: str = "label",
    encoding: EncodingOpt = "utf-8",
    encoding_errors: EncodingErrorsOpt = "strict",
    on_bad: OnBadOpt = "raise",
    progress: bool = True,
    config: ConfigOpt = None,
) -> None:
    """Benchmark model directories on every backend against HF, ORT int8, fastText and TF-IDF
    peers: accuracy, latency, throughput, memory and size, with a Pareto plot."""
    try:
        from .bench import run as run_bench

        run_bench(
            model_dirs, data, out, train=train,
            peers=[p.strip() for p in peers.split(",") if p.strip()],
            # '' is none (peers only), as for --peers: read as "not given", it ran every
            # backend, compile included (minutes), where the user asked for none
            backends=None if backends is None
            else [b.strip() for b in backends.split(",") if b.strip()],
            time_budget=time_budget, threads=threads, isolate=isolate, max_test=max_test,
            progress=progress, log=lambda s: typer.echo(s, err=True),
            load_kw=_load_kw(text_col, label_col, encoding, encoding_errors, on_bad),
            repeat=repeat,
        )  # fmt: skip
    except (*_user_errors(), ImportError) as e:
        _fail(e)
    _emit((out / "report.md").read_text(encoding="utf-8"))


def main() -> None:
    import logging
    import os
    import signal
    import warnings

    # SIGTERM (a job scheduler's stop, `kill`) ends the command as Ctrl-C does, through its
    # clean-up: the default ended the process at once, leaving a save's temporary copy of the
    # model behind. (Not in torchrun's ranks: their agent stops them with it.)
    def stop(*_) -> None:
        # on a line of its own: a progress bar's line has no newline yet (grep '^error:')
        typer.echo("\nerror: stopped by SIGTERM", err=True)
        sys.exit(128 + signal.SIGTERM)

    _hold_closed_descriptors()
    # JSON and reports are UTF-8 whatever the locale: under LANG=C `predict` died on the first
    # non-ASCII label, printing nothing.
    for stream in (sys.stdout, sys.stderr):
        if (getattr(stream, "encoding", None) or "").lower() not in ("utf-8", "utf8"):
            with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper
                stream.reconfigure(encoding="utf-8", errors="backslashreplace")

    # (torchrun's variables, read here: importing train.distributed would import torch, a
    # second of every `slimtext --help`)
    def interrupted(*_) -> None:
        # said, where it only exited 130 (after a blank line) with nothing on what was kept
        typer.echo("\nerror: interrupted (Ctrl-C)", err=True)
        raise KeyboardInterrupt

    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        signal.signal(signal.SIGTERM, stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored (&)
            signal.signal(signal.SIGINT, interrupted)

    # Import chatter that is not the user's business: torchao 0.18 logs "Failed to load" for
    # each of its extensions built for CUDA or another Python, and torch a deprecation of its
    # Enum registrations, whenever it is imported, as transformers does where it is installed
    # (three lines before every `--init hf:` or bench run). Its real errors still show.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)

    # One line per warning, as the errors are: the Python source line a warning names means
    # nothing to someone at the command line.
    warnings.formatwarning = lambda message, category, *_, **__: (
        f"warning: {message}\n" if issubclass(category, UserWarning)
        else f"{category.__name__}: {message}\n"
    )  # fmt: skip
    sys.exit(_run(app))


def _hold_closed_descriptors() -> None:
    """Put /dev/null on a standard descriptor the shell closed (`<&-`, `>&-`), sys.stdin /
    sys.stdout staying None (`_stdout`): left free, the next file opened took it (a model file,
    a save's temporary file), and whatever wrote to descriptor 1 (C code) wrote into that."""
    for fd, stream in ((0, sys.stdin), (1, sys.stdout), (2, sys.stderr)):
        if stream is not None:
            continue
        try:
            os.fstat(fd)
            continue  # open again already (by what, we cannot tell): left alone
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: `fd` itself
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def _run(command) -> int:
    """Run the app, with an option-parser error (a bad value, a missing or unknown option, a
    bad YAML key) as one `error:` line, like every other refusal, where click drew a box of
    usage and help lines (`grep '^error:'` in a job's log found nothing)."""
    click = _click().exceptions
    # The help is written by click and rich, not by `_emit`: its stdout failures are said here
    # (a traceback into /dev/full; nothing and exit 0 into a closed stdout; exit 1, which the
    # README keeps for bugs, from rich into a closed pipe).
    helping = len(sys.argv) < 2 or "--help" in sys.argv[1:]
    try:
        if helping:
            _need_stdout()
        rv = command(standalone_mode=False)
    except typer.Exit as e:  # `_need_stdout`'s; click turns the commands' own into return values
        return e.exit_code
    except OSError as e:
        if not helping:
            raise
        return _stdout_failed(e).exit_code
    except SystemExit as e:  # rich's exit when the reader of the help has gone
        if helping and e.code == 1:
            return _pipe_closed().exit_code
        raise
    except click.UsageError as e:
        if message := e.format_message():  # none: no command given, the help shown instead
            where = e.ctx.command_path if e.ctx is not None else "slimtext"
            typer.echo(f"error: {message} (see {where} --help)", err=True)
        return e.exit_code
    except click.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except typer.Abort:  # an EOF at a prompt; Ctrl-C is exit 130 (typer's Exit)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    main()
