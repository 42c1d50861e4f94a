"""HTTP serving: `create_app(model_dir | predictor) -> FastAPI` and `run(model_dir, host, port)`.

Needs the `serve` extra (`pip install 'slimtext[serve]'`); imported lazily so that a missing
FastAPI is reported by name, and `import slimtext` never pulls in a web stack.
"""

from __future__ import annotations

__all__ = ["DynamicBatcher", "create_app", "run"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'slimtext.serve' has no attribute {name!r}")
    try:
        from . import app, batcher

        if name == "run":  # `run` needs uvicorn too, which `pip install fastapi` does not bring
            import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"slimtext.serve needs the serve extra ({e.name} is missing): "
            "pip install 'slimtext[serve]'"
        ) from e
    return getattr(batcher if name == "DynamicBatcher" else app, name)
