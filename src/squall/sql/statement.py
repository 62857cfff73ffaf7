"""Check that a user's query is one statement that stays inside the subquery squall wraps it in.

squall reads a chunk as ``SELECT … FROM (<query>) AS squall_q WHERE <key range>``.
A query that closes that parenthesis itself (``… ) AS q UNION ALL SELECT … --``)
or that holds a second statement would escape the chunk's key range, and every
chunk would read the whole table. So the query is scanned the way the database
will lex it (strings, quoted identifiers, comments, and PostgreSQL's escape
strings, dollar quotes and nested comments) and refused unless its parentheses
balance and nothing but comments follows a ``;``. Where this scanner and the
database could disagree, the scanner ends a quoted span no later than the
database does, so a disagreement refuses a query rather than letting one out.
"""

from __future__ import annotations

import re

from squall.errors import SpecError

_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}


def one_statement(query: str, dialect: str) -> str:
    """``query`` without its trailing ``;`` and blanks; raises :class:`SpecError` naming ``query`` if it
    holds more than one statement, closes a parenthesis it did not open, or leaves a quote or comment open.
    ``dialect`` is ``postgresql`` or ``sqlite`` (how strings, identifiers and comments are written)."""
    scanner = _Scanner(query, postgres=dialect in ("postgresql", "postgres"))
    return scanner.statement()


class _Scanner:
    def __init__(self, text: str, postgres: bool) -> None:
        self.text = text
        self.postgres = postgres

    def statement(self) -> str:
        text, depth, i = self.text, 0, 0
        while i < len(text):
            char = text[i]
            if char == ";":
                self._only_comments_after(i + 1)
                return text[:i].strip() if depth == 0 else self._unbalanced(depth)
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth < 0:
                    raise SpecError(
                        f"`query` closes a parenthesis it did not open (the `)` at character {i + 1}), which would end "
                        "the subquery squall reads each chunk's key range from; write one SELECT statement whose "
                        "parentheses balance"
                    )
            i = self._skip(i) if self._opens_span(i) else i + 1
        return text.strip() if depth == 0 else self._unbalanced(depth)

    def _unbalanced(self, depth: int) -> str:
        raise SpecError(f"`query` leaves {depth} parenthesis(es) open; write one SELECT statement whose parentheses balance")

    def _only_comments_after(self, start: int) -> None:
        i = start
        while i < len(self.text):
            if self.text[i].isspace() or self.text[i] == ";":
                i += 1
            elif self.text.startswith(("--", "/*"), i):
                i = self._skip(i)
            else:
                raise SpecError(
                    f"`query` holds more than one statement (more SQL follows the `;` at character {start}); "
                    "give one SELECT statement"
                )

    def _opens_span(self, i: int) -> bool:
        text = self.text
        if text.startswith(("--", "/*"), i) or text[i] in "'\"":
            return True
        if not self.postgres:
            return text[i] in "`["
        return text[i] == "$" and not _in_word(text, i) and _DOLLAR_QUOTE.match(text, i) is not None

    def _skip(self, i: int) -> int:
        """The index just past the string, identifier or comment that starts at ``i``."""
        text = self.text
        if text.startswith("--", i):
            end = text.find("\n", i)
            return len(text) if end < 0 else end + 1
        if text.startswith("/*", i):
            return self._comment_end(i)
        if text[i] == "$":
            match = _DOLLAR_QUOTE.match(text, i)
            assert match is not None
            end = text.find(match.group(0), match.end())
            return self._closed(end, i, "dollar-quoted string") + len(match.group(0))
        escapes = self.postgres and text[i] == "'" and i > 0 and text[i - 1] in "eE" and not _in_word(text, i - 1)
        return self._quoted_end(i, _QUOTES[text[i]], escapes)

    def _quoted_end(self, start: int, close: str, backslash_escapes: bool) -> int:
        text, i = self.text, start + 1
        while i < len(text):
            if backslash_escapes and text[i] == "\\":
                i += 2
            elif text[i] == close and text.startswith(close * 2, i) and close != "]":
                i += 2
            elif text[i] == close:
                return i + 1
            else:
                i += 1
        return self._closed(-1, start, "string or quoted name")

    def _comment_end(self, start: int) -> int:
        """PostgreSQL nests block comments; SQLite ends one at the first ``*/``."""
        text, depth, i = self.text, 0, start
        while i < len(text):
            if text.startswith("/*", i) and (self.postgres or depth == 0):
                depth, i = depth + 1, i + 2
            elif text.startswith("*/", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    return i
            else:
                i += 1
        return self._closed(-1, start, "comment")

    def _closed(self, end: int, start: int, what: str) -> int:
        if end < 0:
            raise SpecError(f"`query` leaves a {what} open (from character {start + 1}); close it")
        return end


def _in_word(text: str, i: int) -> bool:
    """Whether the character before ``i`` continues an identifier (so ``i`` does not start a token)."""
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")
