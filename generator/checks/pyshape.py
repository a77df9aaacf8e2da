"""Python texts by shape: parse one text of each shape, not every text (issue 14).

A rendered service is the same few templates filled with other names, numbers and words, so
its Python files differ from another service's only in those. The shape of a text is the text
with every name that is not a keyword turned into ``z`` and every number into ``1`` (``0``,
or ``01`` for a number with leading zeros). If the shape parses, so does the text: the parser
only tells names apart from keywords (soft keywords, ``__debug__`` and ``type`` are kept as
they are, and no keyword holds a ``z``), and every place where the letters or digits themselves
matter is kept: a string's prefix (``rb"``), a name or number right after a backslash (the
escapes ``\\N{...}``, ``\\x41``, ``\\0``) or glued to a digit or letter before it (``0b1012``,
``2fa``), a conversion (``!r``), leading zeros. What only compiling checks (two parameters of
one name, ``return`` outside a function) ast.parse never checked. A shape that does not parse
says nothing: the text itself is parsed then. tests/test_pyshape.py holds each of those cases.

Finding a shape (four regular expressions) costs about four fifths of parsing the text with
CPython's parser, and at 10,000 services 95,137 files have 123 shapes: a cold run's syntax
check costs a fifth less. benchmarks/bench_parse_shapes.py measures it.
"""

from __future__ import annotations

import ast
import keyword
import re

_WORDS = "|".join(sorted({*keyword.kwlist, *keyword.softkwlist, "type", "__debug__"}, key=len, reverse=True))
_PREFIX = r"(?i:rb|br|fr|rf|r|u|f|b)['\"]"  # a string literal's prefix
# each pattern looks at its first character before looking back: the same matches, twice as fast
_NAME = re.compile(
    rf"(?=[A-Za-z_])(?<![A-Za-z0-9_\\!])(?!(?:{_WORDS})(?![A-Za-z0-9_])|{_PREFIX})[A-Za-z_][A-Za-z0-9_]*"
)
_NUMBER = re.compile(r"(?=[1-9])(?<![A-Za-z0-9_\\])[1-9][0-9]*(?![0-9])")
_LEADING_ZEROS = re.compile(r"(?=0)(?<![A-Za-z0-9_\\])0+[1-9][0-9]*(?![0-9])")
_ZEROS = re.compile(r"(?=0)(?<![A-Za-z0-9_\\])0+(?![0-9])")


def shape(text: str) -> str:
    return _ZEROS.sub("0", _LEADING_ZEROS.sub("01", _NUMBER.sub("1", _NAME.sub("z", text))))


_PARSED: dict[str, bool] = {}  # shape -> whether it parses, in this process
_LIMIT = 4096  # shapes; a catalog's output has a few hundred


def parses(text: str, filename: str = "<unknown>") -> None:
    """``ast.parse(text)``'s verdict, raising its SyntaxError, through the text's shape: a shape
    that parsed before answers for every text of that shape."""
    form = shape(text)
    known = _PARSED.get(form)
    if known is None:
        if len(_PARSED) >= _LIMIT:
            _PARSED.clear()
        try:
            ast.parse(form)
            known = True
        except SyntaxError:
            known = False
        _PARSED[form] = known
    if not known:
        ast.parse(text, filename=filename)  # the text's own verdict, and its own message
