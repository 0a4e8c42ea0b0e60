"""Loading stage configs: YAML files, ``key.sub=value`` command-line overrides, one-line validation
errors that name the file and the dotted field, and the resolved copy saved next to every output.

    cfg = load_config(GenerateConfig, "data/configs/generate_demo.yaml", ["sampling.n=8"])

The schemas themselves live in ``cotdistill/config/``; nothing here knows a stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cotdistill.errors import CotdistillError
from cotdistill.store import write_atomic

M = TypeVar("M", bound=BaseModel)


def _parse_override(item: str, where: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise CotdistillError(f"{where}: override '{item}' is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _unshare(x):
    """Plain copy of YAML data: anchors/aliases (``train: *sft``) would otherwise share one dict, so
    an override of one student's field would change every student that aliases it."""
    if isinstance(x, dict):
        return {k: _unshare(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_unshare(v) for v in x]
    return x


def apply_overrides(data: dict[str, Any], overrides: list[str], where: str = "overrides") -> dict:
    """``a.b=1`` sets a nested key; a number indexes a list (``students.0.train.max_steps=10``)."""
    data = _unshare(data)
    for item in overrides:
        path, value = _parse_override(item, where)
        node = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise CotdistillError(f"{where}: override '{item}': '{part}' is not an index of the "
                                          f"{len(node)}-item list at '{'.'.join(path[:i])}'")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if last:
                node[part] = value
            elif not isinstance(node.get(part), dict | list):
                node[part] = {}
                node = node[part]
            else:
                node = node[part]
    return data


def format_validation_error(err: ValidationError, where: str | None, loc_prefix: str = "") -> str:
    """One line; ``loc_prefix`` places a nested config's fields (``students[1].train``) in the file."""
    parts = []
    errors = err.errors()
    for e in errors:
        if _rejected_union_branch(e, errors):
            continue
        loc = ".".join(
            [loc_prefix] * bool(loc_prefix)
            + [str(p) for p in e["loc"] if not str(p).startswith(("function-after", "="))]
        )
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}' (check spelling; see the config's documented keys)")
        elif e["type"] == "missing":
            parts.append(f"missing required key '{loc}'")
        elif not loc:  # a whole-model check (model_validator): its message names the fields
            parts.append(e["msg"].removeprefix("Value error, "))
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}{got_s}")
    return (f"{where}: " if where else "") + "; ".join(parts)


def _rejected_union_branch(e: dict, errors: list[dict]) -> bool:
    """``student: str | StudentInit`` given a mapping also reports "student.str: Input should be a
    valid string"; drop that branch's error when the mapping's branch has an error of its own."""
    loc = e["loc"]
    if not (e["type"].endswith("_type") and loc and loc[-1] in ("str", "int", "float", "bool")
            and isinstance(e.get("input"), dict | list)):  # a mapping was given: the scalar branch was not meant
        return False
    return any(o is not e and o["loc"][:len(loc) - 1] == loc[:-1] and o["loc"] != loc for o in errors)


def load_config(cls: type[M], path: str | os.PathLike | None, overrides: list[str] = ()) -> M:
    """Read YAML (or start empty), apply overrides, validate. Errors name the file and field."""
    data: dict[str, Any] = {}
    where = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise CotdistillError(f"{where}: is a folder, not a config file; pass the path of a YAML file")
        if not p.is_file():
            raise CotdistillError(f"{where}: config file not found; pass the path of a YAML file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise CotdistillError(f"{where}:{at}: malformed YAML ({problem}); fix the syntax") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise CotdistillError(f"{where}: top level must be a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, list(overrides), where)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise CotdistillError(format_validation_error(e, where)) from None


def save_resolved(cfg: BaseModel, path: str | os.PathLike) -> None:
    write_atomic(Path(path), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def check_same_config(path: str | os.PathLike, cfg: M, exclude: set[str], what: str = "a run") -> None:
    """Resuming into a folder whose saved config (``path``, written by save_resolved) differs from ``cfg``
    outside ``exclude`` would mix two runs' output: a one-line error naming the fields that differ."""
    path = Path(path)
    if not path.exists():
        return
    keep = lambda c: c.model_dump(mode="json", exclude=exclude)
    new, old = keep(cfg), keep(load_config(type(cfg), path))
    if new != old:
        diff = [k for k in new if new[k] != old.get(k)]
        raise CotdistillError(f"{path}: output_dir already holds {what} with a different config (differs in: "
                              f"{', '.join(diff)}); use a new output_dir or restore the old settings to resume")
