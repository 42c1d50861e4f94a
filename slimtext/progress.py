"""Progress bars on stderr that suit a terminal and a log file alike."""

from __future__ import annotations

import sys

# Redrawn at most this often when stderr is not a terminal: tqdm's default (every 0.1 s) wrote
# ~1.5 KB a second into a cron job's log, ~40 MB over a night's training.
LOG_INTERVAL_S = 30.0


def progress_bar(**kwargs):
    """`tqdm(**kwargs)` on stderr, redrawn every LOG_INTERVAL_S seconds into a file or pipe."""
    from tqdm.auto import tqdm

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        tty = False
    if not tty:
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(dynamic_ncols=tty, **kwargs)
