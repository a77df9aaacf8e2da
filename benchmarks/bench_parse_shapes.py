"""Would parsing each Python output once per "shape" pay? (issue 14; the answer was no.)

The checks parse every generated Python file (`ast.parse`), kept by each text's hash between
runs, so an edit parses only what it changed and a cold run parses everything. The issue asked
for parsing once per template shape, where escaping makes that sound. The soundest shape found
is the text with every identifier that is not a keyword made `z` and every number `1`: two texts
with the same shape then parse alike (a name never becomes a keyword; a string literal's
prefix, an escape (`\\N{...}`, `\\x41`), a conversion (`!r`) and a number with a leading zero or
glued to letters stay as they are). This prints, for a generated tree, what parsing every file
costs against what finding the shapes costs, and how many shapes there are.

    python benchmarks/bench_parse_shapes.py [generated]

At 10,000 synthetic services (benchmarks/synth.py; 95,137 files, 51 MB) it printed 61 us a file
to parse, 46 us to find its shape and 10,062 shapes: 5.8 s against 4.4 + 0.6 s, a cold run's
saving under half a second of wall time on two cores, for a soundness argument the checks
would have to carry. So the checks parse each text, once: the C parser is nearly as fast as
any sound way of telling texts apart in Python.
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
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "generated"))
