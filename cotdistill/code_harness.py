"""Assert-style code tests that a program cannot pass by ending early, by an ``__eq__`` that says yes, or by
reading the test.

    h = prepare("assert add(2, 3) == 5")           # rewrites the test; the 5 stays here
    r = run_python(program, files=h.files, mode="tests")
    why = judge(h, r.records, limits)               # None: every assert held

``prepare`` parses the test (trusted text, never run here) and rewrites every ``assert`` into a call that records
values (``cotdistill.sandbox_guard`` runs it after the program), so that what an assert expects never enters the
program's run:
- ``assert X == LITERAL`` (either side): the run records X; the comparison is made here, on decoded plain data,
  with Python's ``==``;
- other asserts are split into leaves, the parts that reach the program or the test's own variables (``f(x)``,
  ``candidate(2)``, ``x``), and a skeleton of operators, literals and standard functions (``abs(_ - 1.5) < 1e-9``,
  ``not _``, ``sorted(_) == sorted([1, 3])``): the run records the leaves; the skeletons are evaluated afterwards
  in a second sandboxed run without the program (so its ``abs`` or a patched ``math.isclose`` play no part);
- an assert that cannot be split (a leaf inside a generator or lambda) records its value, truth taken here: the one
  kind a program that reads the harness's memory could fake.
Every value the program's code produces is checked to be plain built-in data of exact type first (a copy is made
with the base types' methods). ``judge`` wants, behind the run's random nonce: every record holding, and the
harness's end line with the count of records, which only a harness that ran to the end writes (an assert the test's
own logic skips, as in ``try: f(-1); assert False`` / ``except ValueError: pass``, is skipped as Python would).
"""

from __future__ import annotations

import ast
import secrets
from dataclasses import dataclass

from cotdistill.sandbox import Limits, run_python

RECORD, PLAIN, ITEMS = "__cotdistill_record", "__cotdistill_plain", "__cotdistill_items"


@dataclass(frozen=True)
class Harness:
    files: dict[str, bytes]
    nonce: str
    sites: list[tuple[str, object, int]]  # ("eq", expected literal | "skel", skeleton source | "truth", None; line)


def _literal(node: ast.AST):
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


class _Plain(ast.NodeTransformer):
    """Wrap every value the program's objects produce in the plain-data check; callees and receivers
    (``f`` in ``f(x)``, ``obj`` in ``obj.m()``) are not values and pass unwrapped (their results are checked)."""

    def _wrap(self, node):
        return ast.Call(ast.Name(PLAIN, ast.Load()), [node], [])

    def _callee(self, node):
        if isinstance(node, ast.Name):
            return node
        if isinstance(node, ast.Attribute):
            node.value = self._callee(node.value)
            return node
        if isinstance(node, ast.Subscript):
            node.value = self._callee(node.value)
            node.slice = self.visit(node.slice)
            return node
        if isinstance(node, ast.Call):
            node.func = self._callee(node.func)
            node.args = [self.visit(a) for a in node.args]
            node.keywords = [self.visit(k) for k in node.keywords]
            return node
        return self.visit(node)

    def visit_Call(self, node):
        return self._wrap(self._callee(node))

    def visit_Attribute(self, node):
        return self._wrap(self._callee(node)) if isinstance(node.ctx, ast.Load) else self.generic_visit(node)

    def visit_Subscript(self, node):
        return self._wrap(self._callee(node)) if isinstance(node.ctx, ast.Load) else self.generic_visit(node)

    def visit_Name(self, node):
        return self._wrap(node) if isinstance(node.ctx, ast.Load) else node


SAFE_CALLS = {"abs", "all", "any", "bool", "chr", "complex", "dict", "divmod", "enumerate", "filter", "float",
              "frozenset", "int", "isinstance", "len", "list", "map", "max", "min", "ord", "pow", "range", "reversed",
              "round", "set", "sorted", "str", "sum", "tuple", "type", "zip"}
SAFE_MODULES = {"math", "cmath", "string", "itertools", "functools", "operator", "collections", "heapq", "bisect",
                "statistics", "fractions", "decimal", "re"}
_SCOPES = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.NamedExpr, ast.Starred,
           ast.Await, ast.Yield, ast.YieldFrom)


class _Unsplittable(Exception):
    pass


class _Split(ast.NodeTransformer):
    """Replace each leaf (a call into anything but a standard function, a name that is not one) by ``_v[i]``."""

    def __init__(self, local: set[str]):
        self.local, self.leaves, self.consumed = local, [], set()

    def _safe_name(self, name: str) -> bool:
        return name not in self.local and (name in SAFE_CALLS or name in SAFE_MODULES)

    def _leaf(self, node):
        if any(isinstance(n, _SCOPES) for n in ast.walk(node)):
            raise _Unsplittable
        self.leaves.append(node)
        return ast.Subscript(ast.Name("_v", ast.Load()), ast.Constant(len(self.leaves) - 1), ast.Load())

    def visit_Call(self, node):
        f = node.func
        safe = (isinstance(f, ast.Name) and self._safe_name(f.id) and f.id in SAFE_CALLS) or (
            isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and self._safe_name(f.value.id)
            and f.value.id in SAFE_MODULES)
        if not safe:
            return self._leaf(node)
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        for a in node.args:  # list(f(x)), sorted(g(x)): a leaf a standard function consumes may be an iterator
            if isinstance(a, ast.Subscript) and isinstance(a.value, ast.Name) and a.value.id == "_v":
                self.consumed.add(a.slice.value)
        return node

    def visit_Name(self, node):
        return node if self._safe_name(node.id) else self._leaf(node)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and self._safe_name(node.value.id) and node.value.id in SAFE_MODULES:
            return node  # math.pi
        return self._leaf(node)

    def generic_visit(self, node):
        if isinstance(node, _SCOPES):
            raise _Unsplittable
        return super().generic_visit(node)


def _locals(tree: ast.AST) -> set[str]:
    """Every name the test binds (assignments, loops, parameters, imports, definitions): its own variables."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(n.name)
        elif isinstance(n, ast.alias) and (n.asname or n.name).split(".")[0] not in SAFE_MODULES:
            out.add((n.asname or n.name).split(".")[0])
    return out


class _Sites(ast.NodeTransformer):
    def __init__(self, local: set[str]):
        self.local = local
        self.sites: list[tuple[str, object, int]] = []

    def visit_Assert(self, node):
        test, kind, expected, values = node.test, "truth", None, node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            for mine, theirs in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
                ok, lit = _literal(theirs)
                if ok:
                    kind, expected, values = "eq", lit, mine
                    break
        if kind == "eq":  # only the value that is compared must be plain; arguments may be the program's objects
            values = _call(PLAIN, values)
        else:
            split = _Split(self.local)
            try:
                skeleton = split.visit(ast.parse(ast.unparse(test), mode="eval").body)
                kind, expected = "skel", ast.unparse(skeleton)
                values = ast.Tuple([_call(ITEMS if i in split.consumed else PLAIN, leaf)
                                    for i, leaf in enumerate(split.leaves)], ast.Load())
            except _Unsplittable:  # evaluated in the program's run: every value on the way checked
                values = _Plain().visit(values)
        site = len(self.sites)
        self.sites.append((kind, expected, node.lineno))
        call = ast.Call(ast.Name(RECORD, ast.Load()), [ast.Constant(site), values], [])
        return ast.copy_location(ast.Expr(call), node)


def _call(name: str, node: ast.AST) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), [node], [])


def prepare(test_source: str) -> Harness:
    """The rewritten test and a fresh nonce, as files for the sandbox; SyntaxError when the test is not Python."""
    tree = ast.parse(test_source)
    sites = _Sites(_locals(tree))
    tree = ast.fix_missing_locations(sites.visit(tree))
    nonce = secrets.token_hex(16)
    return Harness({"tests.py": ast.unparse(tree).encode("utf-8", "surrogatepass"), "nonce": nonce.encode()},
                   nonce, sites.sites)


class _Bad(ValueError):
    pass


MAX_DEPTH = 70


def _decode(tokens: list[str]):
    """Plain data back from the guard's encoding; iterative, so depth costs no recursion here."""
    stack: list[tuple[str, list]] = [("root", [])]
    for tok in tokens:
        tag, body = tok[:1], tok[1:]
        if body == "(" and tag in "luezd":
            if len(stack) > MAX_DEPTH:  # plain() copies 64 deep at most: deeper is forged (and would crash hash())
                raise _Bad("nested too deep")
            stack.append((tag, []))
            continue
        if tok == ")":
            if len(stack) < 2:
                raise _Bad("unbalanced")
            tag, items = stack.pop()
            if tag == "d":
                if len(items) % 2:
                    raise _Bad("odd dict")
                value = dict(zip(items[::2], items[1::2]))
            else:
                value = {"l": list, "u": tuple, "e": set, "z": frozenset}[tag](items)
        elif tag == "i":
            value = int(body, 16)
        elif tag == "f":
            value = float.fromhex(body)
        elif tag == "c":
            re_, im = body.split(",")
            value = complex(float.fromhex(re_), float.fromhex(im))
        elif tag == "s":
            value = bytes.fromhex(body).decode("utf-8", "surrogatepass")
        elif tag == "b":
            value = bytes.fromhex(body)
        elif tag == "r":
            value = range(*(int(x, 16) for x in body.split(",")))
        elif tok in ("T", "F", "N", "?"):
            value = {"T": True, "F": False, "N": None, "?": _Opaque()}[tok]
        else:
            raise _Bad(f"token {tok[:20]!r}")
        stack[-1][1].append(value)
    if len(stack) != 1 or len(stack[0][1]) != 1:
        raise _Bad("incomplete")
    return stack[0][1][0]


class _Opaque:
    """A function or class the test recorded: equal to nothing decoded here, true like any object."""


def _short(v) -> str:
    try:
        s = repr(v)
    except (RecursionError, ValueError):  # too deep, or an int past repr's digit limit
        return f"<{type(v).__name__}>"
    return s if len(s) <= 60 else s[:57] + "..."


def _source(v) -> str:
    """Python source that rebuilds a decoded plain value exactly (floats by their hex, ints by theirs)."""
    t = type(v)
    if t is bool or v is None:
        return repr(v)
    if t is int:
        return hex(v)
    if t is float:
        return f"float.fromhex({v.hex()!r})"
    if t is complex:
        return f"complex(float.fromhex({v.real.hex()!r}), float.fromhex({v.imag.hex()!r}))"
    if t in (str, bytes):
        return repr(v)
    if t is range:
        return f"range({hex(v.start)}, {hex(v.stop)}, {hex(v.step)})"
    if t is list:
        return "[" + ", ".join(map(_source, v)) + "]"
    if t is tuple:
        return "(" + "".join(_source(x) + ", " for x in v) + ")"
    if t in (set, frozenset):
        return f"{t.__name__}([" + ", ".join(map(_source, v)) + "])"
    if t is dict:
        return "{" + ", ".join(f"{_source(a)}: {_source(b)}" for a, b in v.items()) + "}"
    return "object()"  # a function or class the program returned: equal to nothing


def _skeletons(h: Harness, recorded: list[tuple[int, tuple]], limits: Limits) -> str | None:
    """Evaluate the recorded skeleton sites in a sandboxed run without the program; None when all held."""
    used = sorted({m for k, src, _ in h.sites if k == "skel" for m in SAFE_MODULES if m in src})
    lines = [f"import {m}" for m in used] + ["S = {"]
    lines += [f"    {i}: lambda _v: {src}," for i, (k, src, _) in enumerate(h.sites) if k == "skel"]
    lines += ["}", "R = ["] + [f"    ({site}, {_source(vals)})," for site, vals in recorded] + ["]"]
    lines += ["for site, vals in R:", "    try:", "        ok = bool(S[site](vals))", "    except Exception:",
              "        ok = False", "    print(int(ok), site)"]
    r = run_python("\n".join(lines), "", limits)
    got = r.stdout.split("\n")
    if r.status != "ok" or len(got) < len(recorded):
        last = (r.stderr.strip().splitlines() or [""])[-1][:80]
        return f"the assert skeletons could not be evaluated ({r.status}: {last})"
    for line in got[:len(recorded)]:
        ok, site = line.split()
        if ok != "1":
            vals = next(v for s, v in recorded if s == int(site))
            return f"assert on test line {h.sites[int(site)][2]} failed (values {_short(vals)})"
    return None


def judge(h: Harness, records: bytes, limits: Limits | None = None) -> str | None:
    """None when every assert held; else why not, naming the assert's line."""
    seen: dict[int, int] = {}
    end = None
    skel: list[tuple[int, tuple]] = []
    for line in records.decode("ascii", "replace").splitlines():
        parts = line.split(" ")
        if len(parts) < 3 or parts[0] != h.nonce:
            continue  # the program's own writes to the descriptor: without the nonce they count for nothing
        if parts[1] == "end":
            end = int(parts[2]) if parts[2].isdigit() else -1
            break
        try:
            site = int(parts[1])
            kind, expected, lineno = h.sites[site]
            value = _decode(parts[2:])
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, OverflowError, RecursionError):
            return "the harness's record could not be read"
        seen[site] = seen.get(site, 0) + 1
        if kind == "skel":
            if type(value) is not tuple:
                return "the harness's record could not be read"
            skel.append((site, value))
            continue
        try:
            held = value == expected if kind == "eq" else bool(value)
        except Exception:  # e.g. a set of unhashable decoded items, a comparison too deep: cannot hold
            held = False
        if held is not True:
            if kind == "eq":
                return f"assert on test line {lineno}: expected {_short(expected)}, got {_short(value)}"
            return f"assert on test line {lineno} failed (value {_short(value)})"
    if end is None:
        return "the tests did not run to the end (the program exited or was stopped before the harness finished)"
    if end != sum(seen.values()):
        return "the harness's record count does not match its records"
    return _skeletons(h, skel, limits or Limits()) if skel else None
