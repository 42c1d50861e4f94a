"""`another_run`: a second process holding a run's locks, for the tests of refusals."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

_HOLD = """
import sys
from pathlib import Path
from slimtext.train.checkpoint import exclusive
folder, out = (Path(a) if a else None for a in sys.argv[1:3])
with exclusive(folder, out=out):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def another_run(folder=None, out=None, tmpdir=None):
    """A second process holding a run's locks (`exclusive`: its checkpoint folder, its --out),
    as a run in progress does, until the block ends; yields its pid. (Within one process the
    lock is re-entrant, so only another process can stand for another run.)"""
    env = {**os.environ, **({"TMPDIR": str(tmpdir)} if tmpdir else {})}
    args = [sys.executable, "-c", _HOLD, str(folder or ""), str(out or "")]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "held"
        yield p.pid
    finally:
        p.stdin.close()
        p.wait(timeout=60)
