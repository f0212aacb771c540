"""The code's shape (issue 13): no class in plugin/pylog over 250 lines and no function over
McCabe complexity 15, except those named in ALLOWED with the reason they may stay for now.

Complexity is counted as ruff's C901 counts it (the ``mccabe`` package's path graph; a nested
function adds to the function it is in), so the two agree on every number.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import mccabe
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "plugin" / "pylog"
MAX_CLASS_LINES = 250
MAX_COMPLEXITY = 15

# "module:qualified name" -> why it may stay over the limit for now.
ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Offender:
    name: str  # "module:qualified name"
    kind: str  # "class" or "function"
    measure: int  # lines of a class, complexity of a function
    line: int = field(default=0, compare=False)

    def __str__(self) -> str:
        unit = "lines" if self.kind == "class" else "complexity"
        return f"{self.kind} {self.name}: {unit} {self.measure}"


class _Visitor(mccabe.PathGraphingAstVisitor):  # type: ignore[misc]
    """mccabe 0.7's graph, counting ``try`` and ``match`` as ruff does: mccabe counts a ``try``
    without ``else`` one more and skips ``finally``, and reads ``match`` and ``try/except*`` as
    one plain statement."""

    def visitTry(self, node: ast.Try) -> None:
        pathnode = self.appendPathNode(f"Try {node.lineno}")
        blocks = [node.body, *(h.body for h in node.handlers)] + ([node.orelse] if node.orelse
                                                                   else [])
        ends = []
        for block in blocks:
            self.tail = pathnode
            self.dispatch_list(block)
            ends.append(self.tail)
        bottom = mccabe.PathNode("", look="point")
        for end in ends:
            self.graph.connect(end, bottom)
        self.tail = bottom
        self.dispatch_list(node.finalbody)

    def visitMatch(self, node: ast.Match) -> None:
        pathnode = self.appendPathNode(f"Match {node.lineno}")
        last = node.cases[-1]
        catch_all = isinstance(last.pattern, ast.MatchAs) and last.pattern.pattern is None \
            and last.guard is None
        loose_ends = [] if catch_all else [pathnode]  # no case matched
        for case in node.cases:
            self.tail = pathnode
            self.dispatch_list(case.body)
            loose_ends.append(self.tail)
        bottom = mccabe.PathNode("", look="point")
        for end in loose_ends:
            self.graph.connect(end, bottom)
        self.tail = bottom

    visitTryStar = visitTry


def complexity(func: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    visitor = _Visitor()
    visitor.preorder(func, visitor)
    (graph,) = visitor.graphs.values()
    return int(graph.complexity())


def offenders(source: str, module: str, max_class_lines: int = MAX_CLASS_LINES,
              max_complexity: int = MAX_COMPLEXITY) -> list[Offender]:
    """Every class longer than ``max_class_lines`` and every function (not nested in another
    function: it counts towards that one) more complex than ``max_complexity``."""
    found: list[Offender] = []

    def walk(node: ast.AST, prefix: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                assert child.end_lineno is not None
                lines = child.end_lineno - child.lineno + 1
                if lines > max_class_lines:
                    found.append(Offender(f"{module}:{prefix}{child.name}", "class", lines,
                                          child.lineno))
                walk(child, f"{prefix}{child.name}.", in_function)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if not in_function:
                    cc = complexity(child)
                    if cc > max_complexity:
                        found.append(Offender(f"{module}:{prefix}{child.name}", "function", cc,
                                              child.lineno))
                walk(child, f"{prefix}{child.name}.", True)
            else:
                walk(child, prefix, in_function)

    walk(ast.parse(source), "", False)
    return found


def modules() -> dict[str, Path]:
    """plugin/pylog's modules by name, without protoc's output."""
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
        ".__init__"): p for p in sorted(PACKAGE.rglob("*.py")) if not p.name.endswith("_pb2.py")}


def package_offenders(max_class_lines: int = MAX_CLASS_LINES,
                      max_complexity: int = MAX_COMPLEXITY) -> list[Offender]:
    found = []
    for module, path in modules().items():
        found += offenders(path.read_text(), module, max_class_lines, max_complexity)
    return found


def test_no_class_or_function_over_the_limits_but_those_allowed() -> None:
    found = package_offenders()
    unexpected = [str(o) for o in found if o.name not in ALLOWED]
    assert not unexpected, (
        f"over {MAX_CLASS_LINES} lines or complexity {MAX_COMPLEXITY} (split it, or name it in "
        f"ALLOWED with the reason):\n" + "\n".join(unexpected))
    stale = sorted(set(ALLOWED) - {o.name for o in found})
    assert not stale, f"within the limits now: take these out of ALLOWED: {stale}"


# ------------------------------------------------------------------ the checker itself

_COMPLEX = textwrap.dedent("""
    class Small:
        def method(self, x):
            if x:
                return 1
            return 0

    class Big:
        def branches(self, x):
            if x == 1:
                return 1
            elif x == 2:
                return 2
            for i in range(x):
                while i:
                    i -= 1
            try:
                pass
            except OSError:
                pass
            return x and 3

    def nested(x):
        def inner(y):
            if y:
                return y
            return 0
        return inner(x) if x else None

    def matches(x):
        match x:
            case 1:
                return "one"
            case 2:
                return "two"
            case _:
                return "other"
""")


def test_checker_names_long_classes_and_complex_functions() -> None:
    found = {o.name: o for o in offenders(_COMPLEX, "m", max_class_lines=8, max_complexity=2)}
    assert set(found) == {"m:Big", "m:Big.branches", "m:nested", "m:matches"}
    assert found["m:Big"].kind == "class" and found["m:Big"].measure == 14
    assert found["m:Big.branches"].kind == "function"
    assert found["m:Big.branches"].measure == 6  # if, elif, for, while, except: 1 + 5
    assert found["m:matches"].measure == 3  # three cases, the last one catching all




def test_checker_counts_a_nested_function_in_its_outer_one() -> None:
    found = {o.name: o.measure for o in offenders(_COMPLEX, "m", max_class_lines=1000,
                                                  max_complexity=1)}
    assert found["m:nested"] == 3  # inner's if, inner itself; the conditional expression is free
    assert "m:nested.inner" not in found
    assert found["m:Small.method"] == 2


@pytest.mark.parametrize("source, count", [
    ("def f(x):\n    return x\n", 1),
    ("def f(x):\n    match x:\n        case 1:\n            pass\n        case [y]:\n"
     "            pass\n", 3),
    ("async def f(x):\n    async for i in x:\n        if i:\n            return i\n", 3),
    ("def f(x):\n    with x:\n        if x:\n            pass\n", 2),
    ("def f(x):\n    try:\n        pass\n    except OSError:\n        pass\n", 2),
    ("def f(x):\n    try:\n        pass\n    except OSError:\n        pass\n    else:\n"
     "        pass\n    finally:\n        if x:\n            pass\n", 4),
    ("def f(x):\n    try:\n        pass\n    except* OSError:\n        pass\n", 2),
])
def test_complexity_of_small_functions(source: str, count: int) -> None:
    (func,) = ast.parse(source).body
    assert isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
    assert complexity(func) == count


def test_complexity_agrees_with_ruff() -> None:
    """The test and CI's ``ruff check`` (C901) must not disagree about where the limit is."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this python (the test extra installs it)")
    paths = [str(p) for p in modules().values()]
    out = subprocess.run([str(ruff), "check", "--isolated", "--select", "C901", "--config",
                          "lint.mccabe.max-complexity=0", "--output-format", "json", *paths],
                         capture_output=True, text=True, check=False)
    theirs = {}
    for finding in json.loads(out.stdout):
        m = re.match(r"`(\w+)` is too complex \((\d+) > 0\)", finding["message"])
        assert m is not None, finding["message"]
        theirs[(finding["filename"], finding["location"]["row"])] = int(m[2])
    ours = {(str(modules()[o.name.split(":")[0]]), o.line): o.measure
            for o in package_offenders(max_class_lines=10**6, max_complexity=0)}
    assert len(ours) > 100
    # ruff also reports nested functions on their own; they count towards their outer one here.
    assert {k: theirs.get(k) for k in ours} == ours
