"""Progress bars for every subcommand: a tqdm bar in a terminal, plain periodic lines elsewhere.

tqdm redraws its line with carriage returns; written into a log file or a CI console that is
one unreadable line per refresh. :func:`progress_bar` picks by the stream: a TTY gets tqdm, any
other stream a :class:`PlainProgress` that prints one ``\\n``-ended line every ``interval_s``
seconds and one at the end, and a disabled bar is a silent :class:`NullProgress`. All three
take the same calls (``update``, ``set_postfix``, ``close``, ``n``, ``total``), so callers
never test for ``None``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Protocol

__all__ = ["NullProgress", "PlainProgress", "Progress", "is_terminal", "progress_bar"]


class Progress(Protocol):
    """What every bar answers to (tqdm's names)."""

    n: float
    total: float | None

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


def is_terminal(stream: IO | None) -> bool:
    """True when ``stream`` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class NullProgress:
    """A bar that counts and prints nothing (``--no-progress``)."""

    def __init__(self, total: float | None = None, initial: float = 0):
        self.total, self.n = total, initial

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """Plain lines for a log file: ``desc: 12/180 s (7%), 0:00:12 elapsed, loss=0.52``, at most one
    every ``interval_s`` seconds and a last one on close; never a carriage return."""

    def __init__(
        self,
        total: float | None,
        *,
        desc: str,
        unit: str,
        file: IO,
        initial: float = 0,
        interval_s: float = 30.0,
    ):
        self.total, self.n = total, initial
        self.desc, self.unit, self.file, self.interval_s = desc, unit.strip(), file, interval_s
        self.postfix = ""
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._write(now)

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write(time.monotonic())

    def line(self, now: float | None = None) -> str:
        """The line the bar would print now."""
        elapsed = int((time.monotonic() if now is None else now) - self._t0)
        done = f"{self.n:g}"
        if self.total:
            done += f"/{self.total:g} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        return f"{self.desc}: {done}, {clock} elapsed" + (f", {self.postfix}" if self.postfix else "")

    def _write(self, now: float) -> None:
        self.file.write(self.line(now) + "\n")
        self.file.flush()


def progress_bar(
    total: float | None = None,
    *,
    desc: str,
    unit: str,
    enabled: bool = True,
    file: IO | None = None,
    initial: float = 0,
    interval_s: float = 30.0,
    **tqdm_kwargs: Any,
) -> Progress:
    """A bar on ``file`` (default stderr): tqdm on a terminal, :class:`PlainProgress` lines on any
    other stream, :class:`NullProgress` when not ``enabled``. ``tqdm_kwargs`` reach tqdm only."""
    file = sys.stderr if file is None else file
    if not enabled:
        return NullProgress(total, initial)
    if not is_terminal(file):
        return PlainProgress(total, desc=desc, unit=unit, file=file, initial=initial, interval_s=interval_s)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file, **tqdm_kwargs)
