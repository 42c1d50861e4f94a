"""slimtext: Transformer text classifiers that are cheap to train and fast to run.

Lean on import: torch and the model code load only when a function that needs them is called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .api import TextClassifier
    from .data import TextDataset
    from .infer import Predictor

__all__ = ["Predictor", "TextClassifier", "__version__", "load", "load_data"]


def load(
    path: str | os.PathLike,
    backend: str = "torch",
    device: str = "cpu",
    batch_size: int = 64,
    **options,
) -> Predictor:
    """Load a model directory; returns a Predictor with `predict` and `predict_proba`.

    `backend`: torch | torch-bf16 | compile | compile-bf16 | onnxruntime | onnxruntime-int8 |
    auto (times the candidates on this machine and keeps the fastest)."""
    from .infer import load as _load

    return _load(path, backend=backend, device=device, batch_size=batch_size, **options)


def load_data(spec: str | os.PathLike, **kwargs) -> TextDataset:
    """Read labelled text (CSV/TSV/JSONL/Parquet/class folders/`bbc`/`hf:NAME`); the keywords
    are `slimtext.data.load_data`'s (text_cols, label_col, encoding, encoding_errors, on_bad)."""
    from .data.sources import load_data as _load_data

    return _load_data(spec, **kwargs)


def __getattr__(name: str):
    if name == "TextClassifier":
        from .api import TextClassifier

        return TextClassifier
    if name == "Predictor":
        from .infer import Predictor

        return Predictor
    raise AttributeError(f"module 'slimtext' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too (tab completion, dir(slimtext))
    return sorted(set(globals()) | set(__all__))
