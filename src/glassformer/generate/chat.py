"""A terminal chat: conversation history, a chat template, streaming replies, slash commands.

Each turn renders the whole conversation through the model's chat template (SmolLM2's ChatML,
for example) and generates the assistant's reply token by token. The model sees at most its
context window, so before each reply the oldest exchanges are dropped until the rendered prompt
plus ``max_new_tokens`` fits; a system message, if any, is always kept.

Models without a chat template (a small GPT trained on Shakespeare) get a plain transcript,
``User: ...`` / ``Assistant: ...``, and stop when they start writing the next ``User:`` line.

``ChatSession`` holds no terminal: the read-reply loop over stdin is ``glassformer.generate.cli.run_chat``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from glassformer.generate.config import GenerationConfig
from glassformer.generate.decode import stream
from glassformer.utils.config import ConfigError

# Special tokens that end an assistant turn in common chat formats (ChatML, Llama 3, GPT-2...).
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>", "<end_of_turn>")
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
HELP = "commands: /reset (forget the conversation)  /temp X  /topk N  /topp P  /quit"


class ChatSession:
    """The state of one conversation and the rules for turning it into a prompt."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        template: str | None = None,
        config: GenerationConfig | None = None,
        system: str | None = None,
    ) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        config = config or GenerationConfig(strategy="sample", temperature=0.7, top_p=0.9, max_new_tokens=256)
        stop_ids = set(config.stop_token_ids) | set(self._end_of_turn_ids())
        stop_strings = config.stop_strings if template else (*config.stop_strings, "\nUser:")
        self.config = config.replace(stop_token_ids=tuple(sorted(stop_ids)), stop_strings=tuple(stop_strings))
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.context = int(getattr(model, "max_seq_len", 1 << 30))
        if self.config.max_new_tokens >= self.context:
            raise ValueError(
                f"max_new_tokens={self.config.max_new_tokens} leaves no room for the conversation in the "
                f"model's context of {self.context} tokens"
            )

    def _end_of_turn_ids(self) -> list[int]:
        ids = []
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.append(eos)
        lookup = getattr(self.tokenizer, "token_to_id", None)
        if lookup is not None:
            ids += [i for i in (lookup(t) for t in END_OF_TURN_TOKENS) if i is not None]
        return ids

    def reset(self) -> None:
        self.messages = []

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text of ``messages`` followed by the start of the assistant's turn."""
        if self.system is not None:
            messages = [{"role": "system", "content": self.system}, *messages]
        if self.template:
            from glassformer.models.gpt.gguf import apply_chat_template

            return apply_chat_template(messages, add_generation_prompt=True, template=self.template)
        lines = [f"{PLAIN_ROLES.get(m['role'], m['role'])}: {m['content']}\n" for m in messages]
        return "".join(lines) + "Assistant:"

    def prompt_ids(self) -> list[int]:
        """Token ids of the conversation, dropping the oldest exchanges until it fits the context."""
        budget = self.context - self.config.max_new_tokens
        while True:
            ids = self.tokenizer.encode(self.render(self.messages))
            if len(ids) <= budget:
                return ids
            if len(self.messages) <= 1:
                self.messages = []
                raise ValueError(
                    f"that message is {len(ids)} tokens once formatted; with room for a {self.config.max_new_tokens}"
                    f"-token reply it does not fit the model's context of {self.context} tokens. "
                    "Send something shorter (or lower max_new_tokens)"
                )
            # drop the oldest exchange: a user message and the reply to it
            drop = 2 if len(self.messages) > 2 and self.messages[1]["role"] == "assistant" else 1
            del self.messages[:drop]

    def reply(self, text: str) -> Iterator[str]:
        """Add the user's message and stream the assistant's answer; the answer joins the history."""
        self.messages.append({"role": "user", "content": text})
        ids = self.prompt_ids()
        pieces = []
        for piece in stream(self.model, ids, config=self.config, tokenizer=self.tokenizer):
            if piece.text:
                pieces.append(piece.text)
                yield piece.text
        self.messages.append({"role": "assistant", "content": "".join(pieces).strip()})

    def command(self, line: str) -> str:
        """Run a slash command; returns what to tell the user."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name == "/reset":
            self.reset()
            return "(conversation cleared)"
        if name == "/help":
            return HELP
        fields = {"/temp": ("temperature", float, "0.7"), "/topk": ("top_k", int, "40"), "/topp": ("top_p", float, "0.9")}
        if name not in fields:
            return f"unknown command {name}; {HELP}"
        field, kind, example = fields[name]
        try:
            value = kind(arg)
        except ValueError:
            return f"{name} needs a {'number' if kind is float else 'whole number'}, e.g. {name} {example}"
        try:
            changes: dict[str, Any] = {field: value}
            if self.config.strategy == "greedy" and field == "temperature" and value > 0:
                changes["strategy"] = "sample"
            self.config = self.config.replace(**changes)
        except ConfigError as err:
            return f"not changed: {err}"
        return f"({field} = {value})"
