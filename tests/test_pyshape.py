"""Python texts by shape (checks/pyshape.py): a shape that parses means its text parses."""

from __future__ import annotations

import ast
import random

import pytest

from nexus.checks import pyshape
from nexus.checks.pyshape import shape


def _parses(text):
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    [
        'x = "\\N{NO SUCH CHARACTER}"\n',  # the name in an escape is kept: an unknown one fails in both
        "x = 0b1012\n",  # digits glued to a prefix are kept
        "x = 007\n",  # leading zeros: 01 fails as 007 does
        'x = f"{y!q}"\n',  # a conversion is kept
        "x = 2fa\n",  # a digit glued to letters stays invalid
        "if = 1\n",  # keywords are kept
        "match = 1\ncase x:\n    pass\n",  # soft keywords too
        "__debug__ = 1\n",
        "x = rb'a' 'b'\n",  # a string prefix is kept
        "x = Rb'a' + F'{y}' + u'c' + notaprefix'd'\n",
        "x = b'a' 'b'\n",  # bytes and text: invalid, the prefix says so in the shape too
        "def f(a, a): pass\n",
        "x = 1 + \n",
    ],
)
def test_a_shape_that_parses_means_the_text_parses(text):
    # the one direction that makes parsing once per shape sound
    assert not _parses(shape(text)) or _parses(text), shape(text)


def test_texts_that_differ_in_names_and_numbers_share_a_shape():
    one = 'SPEC = Spec(name="billing-api", port=8081, deps=(Dependency("user-auth", setting="user_auth_url"),))\n'
    other = 'SPEC = Spec(name="media-store", port=9100, deps=(Dependency("kei-ai", setting="kei_ai_url"),))\n'
    assert shape(one) == shape(other)
    assert _parses(shape(one))


def test_a_text_that_does_not_parse_raises_its_own_error():
    with pytest.raises(SyntaxError) as raised:
        pyshape.parses('x = "a"\ny = (1,\n', filename="services/a/a/spec.py")
    assert raised.value.filename == "services/a/a/spec.py" and raised.value.lineno == 2
    pyshape.parses('x = "a"\ny = (1,)\n')  # and one that parses raises nothing


def test_each_shape_is_parsed_once(monkeypatch):
    parsed = []
    real = ast.parse
    monkeypatch.setattr(pyshape, "_PARSED", {})
    monkeypatch.setattr(pyshape.ast, "parse", lambda text, **kw: parsed.append(text) or real(text, **kw))
    for name, port in (("billing", 8081), ("media", 8082), ("auth", 9000)):
        pyshape.parses(f'SPEC = Spec(name="{name}", port={port})\n')
    assert len(parsed) == 1
    with pytest.raises(SyntaxError):
        pyshape.parses("SPEC = Spec(name=1 +)\n")
    assert len(parsed) == 3  # a shape that fails: the text itself is parsed for its verdict


@pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
def test_shipped_python_mutated_never_passes_by_its_shape():
    """Every shipped Python file, and 3,000 mutants of them (a character dropped, or a quote, a
    backslash, a digit, a letter, a bracket, a keyword put in): wherever the shape parses, the
    text parses."""
    from conftest import ROOT

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "generated").rglob("*.py"))]
    assert len(texts) > 100
    assert all(_parses(shape(t)) for t in texts)  # the shipped files pass by their shapes
    rng = random.Random(14)
    pieces = ['"', "'", "\\", "0", "7", "x", "_", "(", ")", "{", "}", ":", " if ", "\n", "\\N", "0b", "f'", "rb", "1e"]
    mutants = 0
    while mutants < 3000:
        text = rng.choice(texts)
        at = rng.randrange(len(text))
        mutant = text[:at] + text[at + 1 :] if rng.random() < 0.3 else text[:at] + rng.choice(pieces) + text[at:]
        mutants += 1
        assert not _parses(shape(mutant)) or _parses(mutant), (mutant[max(0, at - 40) : at + 40], at)
