"""Helpers shared by the benchmark scripts: data location, machine facts, tables, JSON."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets"


def dataset_paths(data_root: str | Path, name: str) -> tuple[Path, Path]:
    """(train, test) files of a shared dataset; exits with a clear message when absent."""
    root = Path(data_root)
    train, test = root / name / "train.jsonl.gz", root / name / "test.jsonl.gz"
    missing = [str(p) for p in (train, test) if not p.is_file()]
    if missing:
        sys.exit(
            f"dataset {name!r} not found: missing {', '.join(missing)}.\n"
            f"Pass --data-root pointing at the folder that holds {name}/train.jsonl.gz "
            f"(default: {DEFAULT_DATA_ROOT})."
        )
    return train, test


def machine_info() -> dict:
    """CPU model, core count and library versions, for the report."""
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": platform.processor() or "unknown",
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                info["cpu_model"] = val.strip()
            elif key.strip() == "CPU(s)":
                info["cpus"] = int(val.strip())
            elif key.strip() == "Flags":
                flags = val.split()
                info["amx_bf16"] = "amx_bf16" in flags
                info["avx512_bf16"] = "avx512_bf16" in flags
    except (OSError, ValueError):
        pass
    for mod in ("transformers", "sklearn", "fasttext", "tokenizers"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            pass
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    return info


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, obj: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return p
