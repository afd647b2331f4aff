"""User-facing errors: one clear, actionable line, never a deep traceback."""


from __future__ import annotations

from typing import Optional


class SJCError(Exception):
    """An error caused by the user's input or environment, shown as one line by the CLI."""


def interrupt_behind(e: BaseException) -> Optional[KeyboardInterrupt]:
    """The Ctrl-C that an error stands for (torch's C++ code can re-raise one as another error), else None."""
    if isinstance(e, KeyboardInterrupt):
        return e
    cause = e.__cause__ or e.__context__
    return cause if isinstance(cause, KeyboardInterrupt) else None
