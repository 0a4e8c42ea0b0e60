"""Assert-style code tests that a program cannot pass by ending early or by an ``__eq__`` that says yes.

    h = prepare("assert add(2, 3) == 5")           # rewrites the test; the 5 stays here
    r = run_python(program, files=h.files, mode="tests")
    why = judge(h, r.records)                       # None: every assert held

``prepare`` parses the test (trusted text, never run here) and rewrites every ``assert`` into a call that records a
value (``cotdistill.sandbox_guard`` runs it after the program):
- ``assert X == LITERAL`` (either side): the sandbox records X; the literal never enters the sandbox and the
  comparison is made here, on decoded plain data, with Python's ``==``;
- any other assert: the sandbox records the expression's value, each value the program's code produces on the way
  (calls, names, attributes, subscripts) checked to be plain built-in data of exact type first, so comparisons
  and truth use built-in semantics; its truth is taken here.
``judge`` wants, behind the run's random nonce: one record per assert site at least, every one holding, and the
harness's end line with the count of records, which only a harness that ran to the end writes.
"""

from __future__ import annotations

import ast
import secrets
from dataclasses import dataclass

RECORD, PLAIN = "__cotdistill_record", "__cotdistill_plain"


@dataclass(frozen=True)
class Harness:
    files: dict[str, bytes]
    nonce: str
    sites: list[tuple[str, object, int]]  # ("eq", expected literal, line) or ("truth", None, line)


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


class _Sites(ast.NodeTransformer):
    def __init__(self):
        self.sites: list[tuple[str, object, int]] = []

    def visit_Assert(self, node):
        test, kind, expected, value = node.test, "truth", None, node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            for mine, theirs in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
                ok, lit = _literal(theirs)
                if ok:
                    kind, expected, value = "eq", lit, mine
                    break
        site = len(self.sites)
        self.sites.append((kind, expected, node.lineno))
        call = ast.Call(ast.Name(RECORD, ast.Load()), [ast.Constant(site), _Plain().visit(value)], [])
        return ast.copy_location(ast.Expr(call), node)


def prepare(test_source: str) -> Harness:
    """The rewritten test and a fresh nonce, as files for the sandbox; SyntaxError when the test is not Python."""
    tree = ast.parse(test_source)
    sites = _Sites()
    tree = ast.fix_missing_locations(sites.visit(tree))
    nonce = secrets.token_hex(16)
    return Harness({"tests.py": ast.unparse(tree).encode("utf-8", "surrogatepass"), "nonce": nonce.encode()},
                   nonce, sites.sites)


class _Bad(ValueError):
    pass


def _decode(tokens: list[str]):
    """Plain data back from the guard's encoding; iterative, so depth costs no recursion here."""
    stack: list[tuple[str, list]] = [("root", [])]
    for tok in tokens:
        tag, body = tok[:1], tok[1:]
        if body == "(" and tag in "luezd":
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
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def judge(h: Harness, records: bytes) -> str | None:
    """None when every assert held; else why not, naming the assert's line."""
    seen: dict[int, int] = {}
    end = None
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
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, OverflowError):
            return "the harness's record could not be read"
        seen[site] = seen.get(site, 0) + 1
        try:
            held = value == expected if kind == "eq" else bool(value)
        except Exception:  # e.g. a set of unhashable decoded items: cannot hold
            held = False
        if held is not True:
            if kind == "eq":
                return f"assert on test line {lineno}: expected {_short(expected)}, got {_short(value)}"
            return f"assert on test line {lineno} failed (value {_short(value)})"
    if end is None:
        return "the tests did not run to the end (the program exited or was stopped before the harness finished)"
    if end != sum(seen.values()):
        return "the harness's record count does not match its records"
    missing = [h.sites[i][2] for i in range(len(h.sites)) if i not in seen]
    if missing:
        return f"the assert on test line {missing[0]} never ran"
    return None
