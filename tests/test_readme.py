"""README.md is the user's contract: the options, defaults and keywords it names must be the
code's. Cheap checks (no training) that fail when one side changes without the other."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import typer

from slimtext.cli import app
from slimtext.models import ModelConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
COMMANDS = typer.main.get_command(app).commands
# Flags of other programs that README's examples pass: torchrun's and SLURM's
FOREIGN = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",
           "--nodes", "--ntasks-per-node", "--gpus-per-node"}  # fmt: skip
FLAG = r"(?<![\w-])--[a-z][a-z0-9-]*"


def _flags(command: str) -> set[str]:
    own = {o for p in COMMANDS[command].params for o in (*p.opts, *p.secondary_opts)}
    return own | {"--help"}  # click adds it outside `params`


def _default(command: str, name: str):
    return next(p.default for p in COMMANDS[command].params if p.name == name)


def test_every_option_the_readme_names_exists():
    known = set().union(*(_flags(c) for c in COMMANDS))
    assert sorted(set(re.findall(FLAG, README)) - known - FOREIGN) == []


def test_an_option_shown_on_a_command_line_is_that_commands():
    # `slimtext eval ... --json`: the flag must be eval's, not only some other command's
    line = r"(?:slimtext|-m slimtext) (" + "|".join(COMMANDS) + r")\b([^`\n]*)"
    wrong = [(cmd, f) for cmd, rest in re.findall(line, README)
             for f in re.findall(FLAG, rest.split("#")[0])
             if f not in _flags(cmd) | FOREIGN]  # fmt: skip
    assert wrong == []


@pytest.mark.parametrize(
    "command, name, documented",
    [
        ("train", "model", "transformer"),
        ("train", "long_text", "truncate"),
        ("train", "precision", "auto"),
        ("train", "tokenizer", "bpe"),
        ("train", "device", "auto"),
        ("train", "valid_fraction", 0.1),
        ("train", "pp_schedule", "1f1b"),
        ("pretrain", "long_text", "chunks"),
        ("pretrain", "mask_prob", 0.15),
        ("eval", "device", "cpu"),
        ("predict", "device", "cpu"),
        ("serve", "device", "cpu"),
        ("serve", "backend", "auto"),
        ("serve", "host", "127.0.0.1"),
        ("serve", "max_text_chars", 10_000),
        ("serve", "max_body_bytes", 4 * 2**20),
        ("serve", "max_texts_per_request", None),  # README: 256, or --max-queue if smaller
        ("export", "atol", 1e-4),
        ("export", "opset", 18),
        ("export", "mask_dtype", "bool"),
        ("bench", "isolate", True),
        ("demo", "out", "slimtext-demo"),
    ],
)
def test_the_defaults_the_readme_states(command, name, documented):
    default = _default(command, name)
    assert (str(default) if name == "out" else default) == documented


def test_the_model_defaults_the_readme_states():
    from slimtext.api import _ATTENTION_DEFAULTS
    from slimtext.train import TrainConfig

    shape = {f.name: f.default for f in fields(ModelConfig)}
    assert [shape[k] for k in ("hidden_size", "num_layers", "num_heads", "ffn_size")] == [
        256, 4, 4, 1024,
    ]  # fmt: skip
    assert shape["dropout"] == 0.1
    assert (_ATTENTION_DEFAULTS["hidden_size"], _ATTENTION_DEFAULTS["num_layers"]) == (128, 0)
    assert (TrainConfig.lr, _ATTENTION_DEFAULTS["lr"]) == (5e-4, 3e-3)
    assert (TrainConfig.schedule, TrainConfig.warmup) == ("linear", 0.06)


def test_every_keyword_of_text_classifier_is_documented():
    # README: "every keyword is a field of ModelConfig or TrainConfig, plus ..." the others,
    # by name (`valid_fraction` was missing)
    import inspect

    from slimtext.api import TextClassifier

    own = [n for n, p in inspect.signature(TextClassifier).parameters.items()
           if p.kind is p.KEYWORD_ONLY]  # fmt: skip
    assert own and [n for n in own if f"`{n}`" not in README and f"`{n}=" not in README] == []


def test_auto_races_what_the_readme_says():
    # README: auto times torch and onnxruntime, torch-bf16 and onnxruntime-int8 where they
    # qualify, and never compiles (unless `candidates=` asks)
    from slimtext.infer import AUTO_CANDIDATES

    assert set(AUTO_CANDIDATES) == {"torch", "torch-bf16", "onnxruntime", "onnxruntime-int8"}
