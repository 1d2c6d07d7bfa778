"""Progress that fits where it is shown: a live bar on a terminal, a plain line now and then elsewhere.

tqdm redraws its bar with carriage returns several times a second. On a terminal that is what a
person wants; in a log file (CI, ``make demo > log``) every redraw stays, and a two-minute run
leaves tens of kilobytes of ``\\r`` noise that hides the lines worth reading. :class:`Progress`
keeps tqdm where someone watches (a terminal, a notebook) and otherwise writes one self-contained
line every ``interval_s`` seconds (default 5, or ``$GLASSFORMER_PROGRESS_INTERVAL``), plus the
first and the last::

    train: 120/1000 step (12%), 3.41 step/s, elapsed 0:35, ETA 4:18, loss=1.2345

Messages printed while a bar runs go through :func:`write`, which lifts a live bar out of the way
and puts it back, so neither garbles the other.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, TextIO, TypeVar

from tqdm.auto import tqdm

DEFAULT_INTERVAL_S = 5.0
INTERVAL_ENV = "GLASSFORMER_PROGRESS_INTERVAL"

Mode = Literal["bar", "lines", "off"]
T = TypeVar("T")


def default_interval() -> float:
    """Seconds between plain lines: ``$GLASSFORMER_PROGRESS_INTERVAL`` when set, else 5."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{INTERVAL_ENV}={text!r}: expected a positive number of seconds, e.g. {INTERVAL_ENV}=30")
    return value


def interactive(stream: TextIO) -> bool:
    """Whether a person watches ``stream`` live: a terminal, or a Jupyter kernel's output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
    return type(stream).__module__.split(".")[0] == "ipykernel"


def write(message: str, file: TextIO | None = None) -> None:
    """Print a line (to stdout by default) without breaking a live progress bar.

    Flushed at once, so in a log that mixes stdout and stderr it lands in order with the progress lines.
    """
    target = file if file is not None else sys.stdout
    tqdm.write(message, file=target)
    target.flush()


def si(value: float) -> str:
    """``1234567`` -> ``1.2M``: short numbers for throughputs and counts."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.1f}"


def clock_text(seconds: float) -> str:
    """``h:mm:ss`` from one hour on, else ``m:ss``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One progress display; ``mode`` says which: ``"bar"`` (tqdm), ``"lines"`` (plain) or ``"off"``.

    ``enabled=False`` prints nothing (the ``show_progress``/``progress`` switches). ``stream``
    defaults to stderr, like tqdm; ``clock`` is injectable so tests need not sleep.
    """

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it", unit_scale: bool = False,
                 initial: int = 0, enabled: bool = True, stream: TextIO | None = None,
                 interval_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode: Mode = "off" if not enabled else "bar" if interactive(self.stream) else "lines"
        self.total, self.count, self.desc, self.unit, self.unit_scale = total, initial, desc, unit, unit_scale
        self.interval_s = default_interval() if interval_s is None else interval_s
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be a positive number of seconds, got {self.interval_s}")
        self._initial, self._clock, self._start = initial, clock, clock()
        self._postfix: dict[str, Any] = {}
        self._shown: tuple[int, str] | None = None  # (count, postfix) of the last plain line
        self._last_line_at = self._start
        self._closed = False
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale,
                             file=self.stream, dynamic_ncols=True)
        elif self.mode == "lines":
            self._line(self._start)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = self._clock()
            if now - self._last_line_at >= self.interval_s:
                self._line(now)

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        """Values shown after the counts (``loss=1.23``); they appear with the next redraw or line."""
        self._postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def close(self) -> None:
        """End the display: the bar's last draw, or a final plain line unless the last one already says it."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and self._shown != (self.count, self._postfix_text()):
            self._line(self._clock())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _postfix_text(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self._postfix.items())

    def _amount(self, value: float) -> str:
        return si(value) if self.unit_scale else str(int(value))

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        done = self.count - self._initial
        rate = done / elapsed if elapsed > 0 else None
        if self.total is None:
            parts = [f"{self._amount(self.count)} {self.unit}"]
        else:
            share = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
            parts = [f"{self._amount(self.count)}/{self._amount(self.total)} {self.unit}{share}"]
        parts.append(f"{si(rate) if rate is not None else '?'} {self.unit}/s")
        parts.append(f"elapsed {clock_text(elapsed)}")
        if self.total is not None:
            eta = (self.total - self.count) / rate if rate else None
            parts.append(f"ETA {clock_text(max(0.0, eta)) if eta is not None else '?'}")
        postfix = self._postfix_text()
        if postfix:
            parts.append(postfix)
        head = f"{self.desc}: " if self.desc else ""
        print(head + ", ".join(parts), file=self.stream, flush=True)
        self._shown, self._last_line_at = (self.count, postfix), now


def track(items: Iterable[T], *, total: int | None = None, **options: Any) -> Iterator[T]:
    """Yield ``items`` while showing progress over them (``options`` as for :class:`Progress`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, **options) as bar:
        for item in items:
            yield item
            bar.update()
