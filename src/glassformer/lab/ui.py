"""What the tabs share on the Gradio side: turning a refusal into a message the user sees."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("glassformer.lab")

# What a tab function raises for a problem the user can fix (bad input, an unknown model, a model
# file that is missing); anything else is a bug, logged with its traceback and reported briefly.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, TypeError)


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def error_boundary(fn: F) -> F:
    """Wrap a tab's handler (function or generator) so errors show as a Gradio error message."""
    import gradio as gr

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as err:
                raise gr.Error(_message(err)) from None

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raise gr.Error(_message(err)) from None

    return wrapper  # type: ignore[return-value]
