"""Progress: a tqdm bar on a terminal, a plain line every few seconds elsewhere, nothing when off."""

from __future__ import annotations

import io
import re

import pytest

from glassformer.utils.progress import Progress, default_interval, track, write


class FakeClock:
    """A clock the test moves by hand, so no test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_plain(steps: int, seconds: float, **options: object) -> list[str]:
    clock, stream = FakeClock(), io.StringIO()
    with Progress(steps, desc="train", unit="step", stream=stream, clock=clock, **options) as bar:
        for _ in range(steps):
            clock.now += seconds / steps
            bar.update()
    return stream.getvalue().splitlines()


def test_off_a_terminal_one_plain_line_every_five_seconds() -> None:
    stream_lines = run_plain(1000, 100.0)
    assert 100 / 5 <= len(stream_lines) <= 100 / 5 + 2  # every 5 s, plus the first line
    assert stream_lines[0].startswith("train: 0/1000 step (0%), ? step/s")
    assert stream_lines[-1].startswith("train: 1000/1000 step (100%), 10.0 step/s, elapsed 1:40, ETA 0:00")
    assert all(re.search(r"\d+(\.\d+)?[kMG]? step/s", line) for line in stream_lines[1:])
    assert all("elapsed" in line and "ETA" in line for line in stream_lines)


def test_plain_output_has_no_carriage_returns_and_shows_the_postfix() -> None:
    clock, stream = FakeClock(), io.StringIO()
    bar = Progress(10, desc="train", unit="step", stream=stream, clock=clock, interval_s=1.0)
    for i in range(10):
        clock.now += 0.5
        bar.set_postfix({"loss": f"{2.0 - i / 10:.4f}"})
        bar.update()
    bar.close()
    bar.close()  # a second close prints nothing more
    text = stream.getvalue()
    assert "\r" not in text and bar.mode == "lines"
    assert text.splitlines()[-1].endswith("loss=1.1000")
    assert len(text.splitlines()) == 1 + 10 // 2  # first line + one per second; the last one is the final state


def test_interval_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(run_plain(1000, 100.0, interval_s=20.0)) <= 100 / 20 + 2
    monkeypatch.setenv("GLASSFORMER_PROGRESS_INTERVAL", "25")
    assert default_interval() == 25.0 and len(run_plain(1000, 100.0)) <= 100 / 25 + 2
    monkeypatch.setenv("GLASSFORMER_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="GLASSFORMER_PROGRESS_INTERVAL='soon'"):
        default_interval()


def test_unknown_total_and_scaled_units() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with Progress(desc="counting words", unit="char", unit_scale=True, stream=stream, clock=clock) as bar:
        clock.now += 2.0
        bar.update(3_000_000)
    last = stream.getvalue().splitlines()[-1]
    assert last == "counting words: 3.0M char, 1.5M char/s, elapsed 0:02"


def test_a_terminal_gets_the_tqdm_bar() -> None:
    stream = TerminalStream()
    with Progress(5, desc="train", unit="step", stream=stream) as bar:
        for _ in range(5):
            bar.update()
    assert bar.mode == "bar"
    assert "\r" in stream.getvalue() and "5/5" in stream.getvalue()


def test_messages_do_not_garble_a_live_bar() -> None:
    stream = TerminalStream()
    with Progress(5, desc="train", unit="step", stream=stream) as bar:
        bar.update(2)
        before = len(stream.getvalue())
        write("evaluating at step 2", file=stream)
        after = stream.getvalue()[before:]
    # the bar is wiped before the message and redrawn after it, so the message stands on its own line
    message_at = after.index("evaluating at step 2\n")
    assert "\r" in after[:message_at] and "2/5" in after[message_at:]


def test_disabled_prints_nothing() -> None:
    for stream in (io.StringIO(), TerminalStream()):
        with Progress(5, stream=stream, enabled=False) as bar:
            bar.set_postfix({"loss": 1})
            bar.update(5)
        assert bar.mode == "off" and stream.getvalue() == ""


def test_track_counts_the_items() -> None:
    stream = io.StringIO()
    assert list(track(["a", "b", "c"], desc="cases", unit="case", stream=stream)) == ["a", "b", "c"]
    assert stream.getvalue().splitlines()[-1].startswith("cases: 3/3 case (100%)")
