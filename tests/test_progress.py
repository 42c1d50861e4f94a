import io
import sys

from slimtext.progress import LOG_INTERVAL_S, progress_bar


def test_a_bar_into_a_log_file_is_redrawn_seldom(monkeypatch):
    log = io.StringIO()  # not a terminal: a cron job's or CI's log
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(total=10_000, file=log)
    for _ in range(10_000):
        bar.update(1)
    bar.close()
    assert bar.mininterval == LOG_INTERVAL_S
    assert log.getvalue().count("\r") <= 3  # start, end: not one redraw per 0.1 s

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress_bar(total=1, file=io.StringIO())
    assert bar.mininterval < 1  # tqdm's own, on a terminal
    bar.close()
