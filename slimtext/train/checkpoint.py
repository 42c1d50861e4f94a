"""Resumable training checkpoints: atomic, checksummed, pickle-free to load.

A checkpoint is a directory `step-000123/` holding `model.safetensors`, `best.safetensors`
(when keep-best has a candidate) and `state.pt` (optimizer, scheduler, data position, RNG
states, history). `state.pt` holds only tensors and plain containers, and is read with
`torch.load(weights_only=True)`, which refuses arbitrary pickled objects. The directory is
written atomically with a manifest, and `latest_checkpoint` skips any that fail verification,
so a checkpoint being written when the process died is never the one loaded.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..fileio import IntegrityError, atomic_dir, verify_manifest

PREFIX = "step-"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    folder: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    state: dict,
    best_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write `folder/step-{step}` atomically, then prune all but the newest `keep`."""
    folder = Path(folder)
    target = folder / f"{PREFIX}{step:09d}"
    with atomic_dir(target) as tmp:
        save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
        if best_state is not None:
            save_file(_contiguous(best_state), str(tmp / "best.safetensors"))
        torch.save(state, tmp / "state.pt")
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """Newest checkpoint that verifies; broken ones are reported and skipped."""
    for path in reversed(list_checkpoints(folder)):
        try:
            verify_manifest(path, required=("model.safetensors", "state.pt"))
            return path
        except IntegrityError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None


def load_checkpoint(path: str | Path) -> tuple[dict, dict, dict | None]:
    """(model_state, trainer_state, best_state or None), after verifying the manifest."""
    path = Path(path)
    verify_manifest(path, required=("model.safetensors", "state.pt"))
    model_state = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
    best = path / "best.safetensors"
    return model_state, state, (load_file(str(best)) if best.is_file() else None)
