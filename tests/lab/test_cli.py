"""``glassformer lab``: its options reach the lab, a public bind is warned about, bad values refused."""

from __future__ import annotations

import shutil

import pytest

import glassformer.lab.app as app
from glassformer.cli import main


@pytest.fixture
def launched(monkeypatch):
    """Stand in for the server: record what ``glassformer lab`` would serve, and where."""
    calls = []
    monkeypatch.setattr(app, "run", lambda ctx, host, port: calls.append((ctx, host, port)))
    yield calls
    for ctx, _, _ in calls:
        shutil.rmtree(ctx.workdir, ignore_errors=True)


def test_lab_binds_localhost_by_default_and_warns_about_another_host(launched, capsys):
    assert main(["lab", "--tiny", "--max-chars", "100", "--port", "7999"]) == 0
    ctx, host, port = launched[-1]
    assert (host, port, ctx.limits.max_chars) == ("127.0.0.1", 7999, 100)
    assert ctx.catalog.names() == ["tiny-gpt", "tiny-bert", "tiny-classifier", "tiny-whisper", "tiny-translator",
                                   "tiny-diffusion"]
    assert "warning" not in capsys.readouterr().err
    assert main(["lab", "--tiny", "--host", "0.0.0.0"]) == 0
    assert "warning: --host 0.0.0.0 lets other machines reach the lab" in capsys.readouterr().err


def test_lab_refuses_bad_options(launched, capsys):
    assert main(["lab", "--tiny", "--port", "70000"]) == 2
    assert "--port 70000: give a port from 1 to 65535" in capsys.readouterr().err
    assert main(["lab", "--tiny", "--concurrency", "0"]) == 2
    assert "Limits.concurrency must be a positive integer" in capsys.readouterr().err
    assert main(["lab", "--index", "no/such/index"]) == 2
    assert "no such index" in capsys.readouterr().err
    assert not launched
