"""Generate / chat: talk with a decoder, token by token, with the history kept in the page.

A thin layer over ``glassformer.generate.chat.ChatSession``: each turn builds a session over the
shared model with the conversation so far (the browser holds the history, so sessions never see
each other's), adds the message and streams the reply. ``ChatSession`` renders the chat template,
drops the oldest exchanges when the context is full, and stops at the end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from glassformer.generate.config import GenerationConfig
from glassformer.lab.context import LabContext

TITLE = "Generate / chat"
STRATEGIES = ("greedy", "sample")  # beam search returns its answer at the end: it does not stream


def settings(ctx: LabContext, strategy: str, temperature: float, top_k: float, top_p: float,
             max_new_tokens: float, seed: int | None = None) -> GenerationConfig:
    """The decoding config for one reply; the lab's cap on the length is checked here."""
    from glassformer.lab.limits import LabInputError

    if strategy not in STRATEGIES:
        raise LabInputError(f"strategy {strategy!r}: the chat streams with one of {', '.join(STRATEGIES)}")
    greedy = strategy == "greedy" or float(temperature) == 0
    return GenerationConfig(
        strategy="greedy" if greedy else "sample",
        temperature=1.0 if greedy else float(temperature),
        top_k=int(top_k), top_p=float(top_p),
        max_new_tokens=ctx.limits.new_tokens(max_new_tokens),
        seed=seed, cpu_kernels=ctx.catalog.cpu_kernels,
    )


def history_messages(history: list[Any] | None) -> list[dict[str, str]]:
    """The chat box's messages as plain ``{"role", "content"}`` text dicts (Gradio may send parts)."""
    messages = []
    for item in history or []:
        role = item["role"] if isinstance(item, dict) else item.role
        content = item["content"] if isinstance(item, dict) else item.content
        if isinstance(content, list):  # a list of parts: keep the text ones
            content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        messages.append({"role": str(role), "content": str(content)})
    return messages


def reply(ctx: LabContext, model_name: str, message: str, history: list[Any] | None,
          config: GenerationConfig, system: str | None = None) -> Iterator[list[dict[str, str]]]:
    """Yield the whole conversation after each new piece of the reply (the last message grows)."""
    from glassformer.generate.chat import ChatSession

    message = ctx.limits.text(message, "message")
    if system:
        system = ctx.limits.text(system, "system message")
    loaded = ctx.catalog.get(model_name, "decoder")
    session = ChatSession(loaded.model, loaded.tokenizer, template=loaded.chat_template, config=config,
                          system=system or None)
    past = history_messages(history)
    session.messages = list(past)
    shown = [*past, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    text = ""
    for piece in session.reply(message):
        text += piece
        shown[-1] = {"role": "assistant", "content": text}
        yield shown
    shown[-1] = {"role": "assistant", "content": text.strip()}
    yield shown


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    names = ctx.catalog.names("decoder")
    cap = ctx.limits.max_new_tokens
    with gr.Row():
        model = gr.Dropdown(names, value=names[0] if names else None, label="Model", elem_id="chat-model")
        strategy = gr.Radio(list(STRATEGIES), value="greedy", label="Strategy", elem_id="chat-strategy")
    with gr.Row():
        temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature")
        top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
        top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
        max_new = gr.Slider(1, cap, value=min(128, cap), step=1, label="Max new tokens", elem_id="chat-max-new")
    system = gr.Textbox(label="System message (optional)", max_length=ctx.limits.max_chars)
    chatbot = gr.Chatbot(label="Conversation", elem_id="chat-box", height=360, buttons=["copy", "copy_all"])
    message = gr.Textbox(label="Message", placeholder="Say something", elem_id="chat-message",
                         max_length=ctx.limits.max_chars)
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
        clear = gr.Button("Clear", elem_id="chat-clear")

    @error_boundary
    def respond(model_name: str, text: str, history: list[Any], strat: str, temp: float, k: float,
                p: float, n: float, sys_msg: str) -> Iterator[tuple[list[dict[str, str]], str]]:
        config = settings(ctx, strat, temp, k, p, n)
        for shown in reply(ctx, model_name, text, history, config, system=sys_msg):
            yield shown, ""

    inputs = [model, message, chatbot, strategy, temperature, top_k, top_p, max_new, system]
    sent = send.click(respond, inputs, [chatbot, message], concurrency_id="models")
    submitted = message.submit(respond, inputs, [chatbot, message], concurrency_id="models")
    stop.click(None, None, None, cancels=[sent, submitted])
    clear.click(lambda: ([], ""), None, [chatbot, message], queue=False)
