"""`slimtext bench`: slimtext models on every backend against Hugging Face, ONNX Runtime int8,
fastText and TF-IDF peers, on the same texts; see run.py (the orchestration), measure.py
(latency, throughput, memory), peers.py and report.py.

    from slimtext.bench import run
    run(["my-model"], data="test.jsonl", train="train.jsonl", out="bench-out", time_budget=600)

Nothing heavy is imported here: torch and the peer libraries load when `run` is called.
"""

from __future__ import annotations

from .run import run

__all__ = ["run"]
