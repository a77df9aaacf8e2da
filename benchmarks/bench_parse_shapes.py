"""What parsing each Python output once per shape saves (issue 14; checks/pyshape.py).

The checks parse every generated Python file, kept by each text's hash between runs, so an
edit parses only the texts it changed and a cold run parses them all. They parse one text of
each shape (checks/pyshape.py says what a shape is and why a shape that parses means its text
parses). This prints, for a generated tree, what parsing every file costs, what finding the
shapes costs and how many shapes there are.

    python benchmarks/bench_parse_shapes.py [generated]

2026-12-02, 10,000 synthetic services (benchmarks/synth.py: 95,137 files, 51 MB): parsing each
6.43 s (68 us a file), finding the shapes 5.15 s (54 us a file), 123 shapes: a fifth of the
syntax check's CPU on a cold run. The shipped tree: 486 files, 144 shapes, 0.07 -> 0.06 s. The
first shape (bf093b3) kept every name written right before a quote, taking the end of every
string for a prefix: 10,062 shapes, and nothing saved. CPython's parser is fast; a sound shape
found with regular expressions costs most of what it does.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import time
from pathlib import Path

from nexus.checks.pyshape import shape


def main(tree: Path) -> None:
    texts = [p.read_text(encoding="utf-8") for p in sorted(tree.rglob("*.py"))]
    if not texts:
        sys.exit(f"no Python files under {tree}: run `nexus generate` first")
    start = time.perf_counter()
    for text in texts:
        ast.parse(text)
    parse = time.perf_counter() - start
    start = time.perf_counter()
    shapes = {hashlib.blake2b(shape(t).encode(), digest_size=16).digest() for t in texts}
    shaping = time.perf_counter() - start
    per_file = 1e6 / len(texts)
    print(f"{len(texts):,} Python files, {sum(map(len, texts)) / 1e6:.1f} MB")
    print(f"parse each:         {parse:.2f} s ({parse * per_file:.0f} us a file)")
    print(f"find their shapes:  {shaping:.2f} s ({shaping * per_file:.0f} us a file), {len(shapes):,} shapes")
    print(f"parse once a shape: {shaping + parse * len(shapes) / len(texts):.2f} s in all")


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "generated"))
