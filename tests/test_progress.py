"""progress_bar: tqdm on a terminal, plain newline-ended lines on any other stream, silence when off."""

from __future__ import annotations

import io

from vcfbert_fast.progress import NullProgress, PlainProgress, is_terminal, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_stream_gets_plain_lines_without_carriage_returns():
    out = io.StringIO()
    bar = progress_bar(10, desc="train", unit="s", file=out, interval_s=0.0)
    assert isinstance(bar, PlainProgress)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(loss="0.5000")
    bar.close()
    bar.close()  # closing twice writes the last line once
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4, lines  # one per update (interval 0) and the last one
    assert lines[0].startswith("train: 1/10 s (10%), 0:00:00 elapsed")
    assert lines[-1].startswith("train: 3/10 s (30%)") and lines[-1].endswith(", loss=0.5000")


def test_plain_lines_are_periodic_and_count_without_a_total():
    out = io.StringIO()
    bar = progress_bar(None, desc="reading panel", unit=" sites", file=out, interval_s=3600.0)
    for _ in range(1000):
        bar.update(5)
    assert out.getvalue() == ""  # nothing before the interval has passed
    bar.close()
    assert out.getvalue() == "reading panel: 5000 sites, 0:00:00 elapsed\n"


def test_disabled_bar_writes_nothing_but_counts():
    out = io.StringIO()
    bar = progress_bar(4, desc="x", unit="step", file=out, enabled=False, initial=1)
    assert isinstance(bar, NullProgress)
    bar.update(2)
    bar.set_postfix(a=1)
    bar.close()
    assert bar.n == 3 and bar.total == 4 and out.getvalue() == ""


def test_terminal_gets_tqdm():
    from tqdm import tqdm

    out = _Terminal()
    bar = progress_bar(5, desc="imputing", unit=" sites", file=out, initial=2)
    assert isinstance(bar, tqdm) and bar.total == 5 and bar.n == 2
    bar.update(3)
    bar.close()
    assert "imputing" in out.getvalue() and "5/5" in out.getvalue()


def test_is_terminal_of_odd_streams():
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)  # isatty raises ValueError on a closed stream
    assert not is_terminal(None) and not is_terminal(object()) and not is_terminal(io.StringIO())
    assert is_terminal(_Terminal())
