"""The one exception type for mistakes a user can make.

Everything a user can cause (a typo in an architecture, a missing file, a bucket
that refuses access) is raised as :class:`VitzooError`. The CLI prints its message
on one line and exits non-zero; library users can catch a single type.
"""

from __future__ import annotations


class VitzooError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            hint = self.hint.rstrip(".")
            return f"{text}. {hint[:1].upper()}{hint[1:]}."
        return f"{text}."
