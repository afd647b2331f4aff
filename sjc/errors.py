"""User-facing errors: one clear, actionable line, never a deep traceback."""


class SJCError(Exception):
    """An error caused by the user's input or environment, shown as one line by the CLI."""
