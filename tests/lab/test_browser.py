"""The lab in a real browser: Playwright drives Debian's /usr/bin/chromium against a lab on a free
local port (tiny random models). Every tab is opened and used, and a screenshot of each is saved
under out/lab-screenshots/ (the RAG tab answers from an index of two Markdown files, built with the
real MiniLM; the transcribe tab gets a generated WAV, the translate tab a sentence, the generate tab a class); no request may leave for another host; a 1 MB
prompt is refused; four sessions at once each get their own answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from glassformer.lab import chat_tab, translate_tab
from glassformer.lab.app import Server, serve, tiny_context
from glassformer.lab.catalog import TINY_GPT, TINY_TRANSLATOR, TINY_WHISPER
from glassformer.lab.limits import Limits
from glassformer.models.whisper.transcribe import transcribe

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip("the browser tests need Debian's chromium: run `make chromium`", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (make venv)")

SHOTS = Path("out/lab-screenshots")
WAIT_MS = 60_000
MAX_NEW = 16
QUESTION = "How often does the trainer save a checkpoint?"


@pytest.fixture(scope="module")
def lab(docs_index) -> Iterator[Server]:
    indexes = {} if docs_index is None else {"docs": docs_index}
    server = serve(tiny_context(Limits(max_new_tokens=64, concurrency=2), indexes), port=None)
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(lab.url)
    yield page
    context.close()


def _tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def _choose(page, dropdown: str, option: str) -> None:
    """Pick ``option`` from a dropdown by clicking it in the open list, then wait until the box shows it:
    typing and pressing Enter races the list's filtering, and a lost Enter leaves the old value."""
    box = page.locator(f"{dropdown} input")
    box.click()
    box.fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_function("([sel, want]) => document.querySelector(sel)?.value === want",
                           arg=[f"{dropdown} input", option])


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _chat(page, message: str) -> None:
    _tab(page, "Generate / chat")
    slider = page.locator("#chat-max-new input[type=number]")
    slider.fill(str(MAX_NEW))
    slider.press("Enter")
    page.locator("#chat-message textarea").fill(message)
    page.locator("#chat-send").click()


def _alnum(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _expected_reply(lab_ctx, message: str) -> str:
    config = chat_tab.settings(lab_ctx, "greedy", 0.7, 0, 0.9, MAX_NEW)
    return list(chat_tab.reply(lab_ctx, TINY_GPT, message, [], config))[-1][-1]["content"]


def test_every_tab_works_in_a_browser(page, lab, make_tone, tmp_path):
    _tab(page, "Attention explorer")
    page.locator("#attn-text textarea").fill("the cat sat")
    page.locator("#attn-head textarea").fill("1")
    page.locator("#attn-run").click()
    page.locator("#attn-png img").wait_for()
    assert "11 tokens, 2 layers x 2 heads; showing layer 0 head 1" in page.locator("#attn-summary").inner_text()
    assert page.locator("#attn-png img").evaluate("img => img.complete && img.naturalWidth > 100")
    assert page.frame_locator("#attn-view iframe").locator("svg line").count() > 0  # the head view drew
    _shot(page, "attention")

    _chat(page, "hello")
    bot = page.locator('#chat-box [data-testid="bot"]').last
    bot.wait_for()
    page.locator("#chat-send").wait_for(state="visible")
    expected = _expected_reply(lab.context, "hello")
    page.wait_for_function("([sel, n]) => (document.querySelector(sel)?.innerText || '').replace(/[^A-Za-z0-9]/g, '').length >= n",
                           arg=['#chat-box [data-testid="bot"]', len(_alnum(expected))])
    assert _alnum(bot.inner_text()) == _alnum(expected)
    assert page.locator('#chat-box [data-testid="user"]').last.inner_text().strip() == "hello"
    _shot(page, "chat")

    _tab(page, "Classify")
    page.locator("#cls-text textarea").fill("a good film")
    page.locator("#cls-run").click()
    page.locator("#cls-attention").get_by_text("[CLS]").first.wait_for()
    page.locator("#cls-label").get_by_text(re.compile("negative|positive")).first.wait_for()
    page.get_by_text("Label a file (one text per line)").click()
    texts = tmp_path / "reviews.txt"
    texts.write_text("an awful plot\nlovely actors\n", encoding="utf-8")
    page.locator("#cls-file input[type=file]").set_input_files(str(texts))
    page.locator("#cls-table").get_by_text("lovely actors").wait_for()  # uploaded, read and labelled
    _shot(page, "classify")

    _tab(page, "RAG")
    if lab.context.indexes:
        page.locator("#rag-question textarea").fill(QUESTION)
        page.locator("#rag-run").click()
        page.locator("#rag-answer").get_by_text("training.md").first.wait_for()  # cited
        page.locator("#rag-chunks").get_by_text("500 steps").first.wait_for()
    else:
        page.get_by_text("No index is listed").wait_for()
    _shot(page, "rag")

    _tab(page, "Generate images")
    _choose(page, "#gen-class", "sandal")
    page.locator("#gen-steps input").fill("5")
    page.locator("#gen-run").click()
    page.locator("#gen-grid img").wait_for()
    page.locator("#gen-strip img").wait_for()
    page.locator("#gen-summary").get_by_text("class sandal").wait_for()
    assert "DDIM with 5 steps, seed 0" in page.locator("#gen-summary").inner_text()
    _shot(page, "generate")

    _tab(page, "Transcribe")
    tone = make_tone(tmp_path / "tone.wav")
    page.locator("#asr-audio input[type=file]").set_input_files(str(tone))
    page.locator("#asr-run").click()
    loaded = lab.context.catalog.get(TINY_WHISPER, "speech")
    expected = transcribe(loaded.model, loaded.tokenizer, tone).text
    page.wait_for_function("sel => (document.querySelector(sel)?.value || '').length > 0", arg="#asr-text textarea")
    assert page.locator("#asr-text textarea").input_value() == expected
    page.locator("#asr-png img").wait_for()
    assert "real-time factor" in page.locator("#asr-summary").inner_text()
    _shot(page, "transcribe")

    _tab(page, "Translate")
    page.locator("#mt-text textarea").fill("A man rides a bike.")
    page.locator("#mt-run").click()
    expected = translate_tab.translate_text(lab.context, TINY_TRANSLATOR, "A man rides a bike.").text
    page.locator("#mt-png img").wait_for()
    page.wait_for_function("sel => (document.querySelector(sel)?.innerText || '').includes('sentences/s')",
                           arg="#mt-summary")
    assert page.locator("#mt-output textarea").input_value() == expected
    _shot(page, "translate")


def test_the_page_asks_nothing_of_other_hosts(page, lab):
    hosts = set()
    page.on("request", lambda request: hosts.add(urlparse(request.url).netloc))
    page.reload()
    for title in ("Attention explorer", "Generate / chat", "Classify", "RAG", "Transcribe"):
        _tab(page, title)
    _tab(page, "Attention explorer")
    page.locator("#attn-run").click()
    page.locator("#attn-png img").wait_for()
    page.wait_for_timeout(1500)  # late fetches (fonts, icons); the queue keeps a stream open, so no "networkidle"
    assert hosts == {urlparse(lab.url).netloc}, f"requests left the lab for {sorted(hosts - {urlparse(lab.url).netloc})}"


def test_a_megabyte_prompt_is_refused_in_the_page(page):
    _tab(page, "Generate / chat")
    box = page.locator("#chat-message textarea")
    box.evaluate("el => el.removeAttribute('maxlength')")  # a client that ignores the page's own cap
    box.fill("x" * 1_000_000)
    page.locator("#chat-send").click()
    page.get_by_text("the message is 1,000,000 characters; the lab takes at most 4,000").wait_for()
    box.fill("")
    assert page.locator('#chat-box [data-testid="bot"]').count() == 0
    _shot(page, "refused")


def test_four_sessions_at_once_get_their_own_answers(browser, lab):
    candidates = ["alpha one", "charlie three", "delta four", "zz", "echo", "kilo", "lima", "x-ray"]
    answers: dict[str, str] = {}
    for message in candidates:
        reply = _alnum(_expected_reply(lab.context, message))
        if reply and reply not in answers.values():
            answers[message] = reply
        if len(answers) == 4:
            break
    assert len(answers) == 4, "the tiny model gives too few distinct replies to tell sessions apart"
    contexts = [browser.new_context() for _ in answers]
    try:
        pages = []
        for context in contexts:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(lab.url)
            pages.append(page)
        for page, message in zip(pages, answers):  # all four are sent before any answer is read
            _chat(page, message)
        for page, (message, reply) in zip(pages, answers.items()):
            page.wait_for_function(
                "([sel, n]) => (document.querySelector(sel)?.innerText || '').replace(/[^A-Za-z0-9]/g, '').length >= n",
                arg=['#chat-box [data-testid="bot"]', len(reply)])
            assert _alnum(page.locator('#chat-box [data-testid="bot"]').last.inner_text()) == reply, message
    finally:
        for context in contexts:
            context.close()
