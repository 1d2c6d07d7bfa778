"""The lab's Gradio app: one tab per module in ``TABS``, a shared queue, offline by construction.

``build_app(context)`` lays out the tabs; ``serve(...)`` starts it on a local port and returns at
once (tests, notebooks); ``run(...)`` serves until interrupted (``glassformer lab``). A tab module
has ``TITLE``, ``build(context)`` and, optionally, ``unavailable() -> str | None`` (a reason it
cannot work here, shown in place of the tab). Adding a tab is one module and one line in ``TABS``.

Offline: analytics are off (``analytics_enabled=False`` and ``GRADIO_ANALYTICS_ENABLED``), there
is no share link and no server-side rendering (no Node process), and the theme uses the system's
fonts, so the page asks nothing of any host but the lab (the browser tests record every request).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassformer.lab.catalog import Catalog
from glassformer.lab.context import LabContext
from glassformer.lab.limits import Limits

TABS: tuple[str, ...] = (
    "glassformer.lab.attention_tab",
    "glassformer.lab.chat_tab",
    "glassformer.lab.classify_tab",
    "glassformer.lab.rag_tab",
    "glassformer.lab.sample_tab",
    "glassformer.lab.transcribe_tab",
    "glassformer.lab.translate_tab",
)
LOCAL_HOST = "127.0.0.1"
SYSTEM_FONTS = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
SYSTEM_MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


def offline_environment(workdir: Path) -> None:
    """Settings Gradio reads from the environment: no analytics, uploads under ``workdir``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")  # a proxy must not see local calls


def build_app(ctx: LabContext) -> Any:
    """The ``gr.Blocks`` with every tab of ``TABS``, its queue capped at ``ctx.limits``."""
    offline_environment(ctx.workdir)
    import gradio as gr

    with gr.Blocks(title="glassformer lab", analytics_enabled=False) as demo:
        gr.Markdown("# glassformer lab\nEverything runs on this machine; models load on first use.")
        for name in TABS:
            tab = importlib.import_module(name)
            with gr.Tab(tab.TITLE, id=name.rsplit(".", 1)[-1]):
                reason = getattr(tab, "unavailable", lambda: None)()
                if reason is None:
                    tab.build(ctx)
                else:
                    gr.Markdown(f"**Not available here.** {reason}")
    demo.queue(default_concurrency_limit=ctx.limits.concurrency, max_size=ctx.limits.queue_size)
    return demo


def _theme() -> Any:
    import gradio as gr

    return gr.themes.Base(font=list(SYSTEM_FONTS), font_mono=list(SYSTEM_MONO))


@dataclass
class Server:
    """A running lab: its address, its context, and ``close()`` to stop it and remove its folder."""

    url: str
    demo: Any
    context: LabContext

    def close(self) -> None:
        self.demo.close()
        shutil.rmtree(self.context.workdir, ignore_errors=True)


def _launch_options(ctx: LabContext, host: str, port: int | None) -> dict[str, Any]:
    return {
        "server_name": host, "server_port": port, "share": False, "ssr_mode": False, "inbrowser": False,
        "max_file_size": max(ctx.limits.max_upload_bytes, ctx.limits.max_audio_bytes),  # each tab checks its own "allowed_paths": [str(ctx.workdir)], "show_error": True,
        "enable_monitoring": False, "mcp_server": False, "pwa": False, "theme": _theme(),
        "footer_links": ["settings"], "quiet": True,
    }


def make_workdir() -> Path:
    """A fresh private folder for one lab (pictures, uploads, tiny models), removed when it stops."""
    workdir = Path(tempfile.mkdtemp(prefix="glassformer-lab-"))
    (workdir / "uploads").mkdir()
    return workdir


def new_context(catalog: Catalog, limits: Limits | None = None, indexes: Mapping[str, Path] | None = None,
                workdir: Path | None = None) -> LabContext:
    """A context over ``catalog`` with its own folder (``make_workdir`` unless given)."""
    return LabContext(catalog, limits or Limits(), workdir or make_workdir(), dict(indexes or {}))


def tiny_context(limits: Limits | None = None, indexes: Mapping[str, Path] | None = None) -> LabContext:
    """A context serving tiny random models, written into the lab's own folder (tests, demos),
    and the RAG ``indexes`` given (built with the real embedder: there is no tiny one)."""
    from glassformer.lab.catalog import tiny_catalog

    workdir = make_workdir()
    return new_context(tiny_catalog(workdir / "models"), limits, indexes, workdir=workdir)


def serve(ctx: LabContext, host: str = LOCAL_HOST, port: int | None = None) -> Server:
    """Start the lab in background threads and return once it answers."""
    demo = build_app(ctx)
    _, url, _ = demo.launch(prevent_thread_lock=True, **_launch_options(ctx, host, port))
    return Server(url, demo, ctx)


@contextmanager
def running(ctx: LabContext, host: str = LOCAL_HOST, port: int | None = None) -> Iterator[Server]:
    """``serve`` as a context manager: the lab stops and its folder goes when the block ends."""
    server = serve(ctx, host, port)
    try:
        yield server
    finally:
        server.close()


def run(ctx: LabContext, host: str = LOCAL_HOST, port: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C), then remove the lab's folder."""
    demo = build_app(ctx)
    try:
        demo.launch(**_launch_options(ctx, host, port))
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
