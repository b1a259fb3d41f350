"""A cursor over a token list, shared by the hand-written recursive-descent parsers."""

from __future__ import annotations


class TokenCursor:
    """``toks`` is a list of (kind, text, position) ending with an ("end", "", n) token."""

    toks: list[tuple[str, str, int]]
    i: int

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t
