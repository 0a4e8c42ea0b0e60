"""Problem sources: any Hugging Face dataset (hub id or local file) and reasoning-gym tasks.

    problems = load_problems(HFSource(path="data/arithmetic_test.jsonl"))
    problems = load_problems(ReasoningGymSource(task="chain_sum", size=50, seed=0))

reasoning-gym problems keep the full task entry in ``metadata["rg_entry"]`` and the task name in
``metadata["rg_task"]``, which is what the task's own scorer needs later.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
from pathlib import Path

from cotdistill.config import HFSource, ReasoningGymSource
from cotdistill.errors import CotdistillError, first_line
from cotdistill.records import Problem
from cotdistill.store import iter_jsonl, read_records

_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=str))


def _check_utf8(raw: bytes, where: str) -> None:
    """A text file's bytes that are not UTF-8: one line naming the row and the byte (pyarrow's error is 40 lines)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        row = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        raise CotdistillError(
            f"{where}: row {row} (line {row}, byte {col} of the line, offset {e.start} in the file): "
            f"{raw[e.start:e.end]!r} is not UTF-8; re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _load_hf(src: HFSource):
    import datasets

    p = Path(src.path)
    builder = _LOCAL_BUILDERS.get(p.suffix.lower())
    where = f"source.path '{src.path}'"
    if builder is not None:
        if not p.is_file():
            raise CotdistillError(f"{where}: file not found; give an existing jsonl/json/parquet/csv file or a hub id")
        raw = None if builder == "parquet" else p.read_bytes()
        if raw is not None:
            _check_utf8(raw, where)
        text_rows = None if raw is None else [x for x in raw.splitlines() if x.strip()]
        if p.stat().st_size == 0 or text_rows == [] or (builder == "csv" and len(text_rows) == 1):
            raise CotdistillError(f"{where}: the file has no rows{' (a header only)' if text_rows else ''}; it needs "
                                  f"at least one problem row")
        try:
            return datasets.load_dataset(builder, data_files={"train": str(p)}, split=src.split)
        except ValueError as e:  # bad split expression
            if "corresponds to no data" in str(e):
                raise CotdistillError(f"{where}: the file has no rows; it needs at least one problem row") from None
            raise CotdistillError(
                f"{where}: cannot select split '{src.split}' ({first_line(e)}); local files have one split, 'train'"
            ) from None
        except Exception as e:  # malformed file content
            cause = e.__cause__ or e
            if p.suffix.lower() == ".jsonl":  # Arrow counts rows from 0: name the line an editor shows instead
                try:
                    for _ in iter_jsonl(p, skip_torn_tail=False):
                        pass
                except CotdistillError as bad:
                    raise CotdistillError(f"{where}: {str(bad).removeprefix(f'{p}: ')}") from None
            raise CotdistillError(
                f"{where}: cannot parse as {builder} ({type(cause).__name__}: {first_line(cause)})"
            ) from None
    if p.is_dir():
        inside = sorted(f.name for f in p.iterdir() if f.suffix.lower() in _LOCAL_BUILDERS)[:3]
        raise CotdistillError(f"{where}: is a folder, not a problems file; give a .jsonl, .json, .parquet or .csv "
                              f"file" + (f" (in it: {', '.join(inside)})" if inside else ""))
    if p.exists():
        raise CotdistillError(f"{where}: unsupported file type '{p.suffix}'; use .jsonl, .json, .parquet or .csv")
    try:
        return datasets.load_dataset(src.path, src.name, split=src.split)
    except Exception as e:
        raise CotdistillError(f"{where}: could not load hub dataset (split '{src.split}'): {first_line(e)}") from None


LETTERS = "ABCDEFGHIJ"


def _options(row: dict, src: HFSource, where: str) -> list[str]:
    cols = src.fields.choices
    opts = row[cols] if isinstance(cols, str) else [row[c] for c in cols]
    name = f"source.fields.choices ({cols!r})"
    if not isinstance(opts, list) or not 2 <= len(opts) <= len(LETTERS):
        raise CotdistillError(f"{where}: {name} must give a list of 2 to 10 options, got {str(opts)[:60]!r}")
    if any(not isinstance(o, str | int | float) or not str(o).strip() for o in opts):
        raise CotdistillError(f"{where}: {name}: an option is empty or not text; every option needs text")
    return [str(o).strip() for o in opts]


def _gold_index(ans, opts: list[str], field: str, where: str) -> int:
    """The gold option of a multiple-choice row: the answer field as a 0-based index, a letter, or an option's text."""
    text = "" if ans is None else str(ans).strip()
    if (isinstance(ans, int) or text.isdigit()) and int(text) < len(opts):
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[:len(opts)]:
        return LETTERS.index(text.upper())
    if opts.count(text) == 1:
        return opts.index(text)
    raise CotdistillError(f"{where}: field '{field}' = {text[:40]!r} names no single option of {len(opts)}; give a "
                          f"0-based index, a letter or the option's exact text")


def _choice_problem(ans, row: dict, src: HFSource, pid: str, where: str) -> tuple[str | None, list[str]]:
    """(gold letter, options in the order the prompt shows them)."""
    opts = _options(row, src, where)
    cols = src.fields.choices
    if isinstance(cols, list) and src.fields.answer in cols:  # GPQA: the answer column is one of the options
        ans = row[src.fields.answer]
    gold = None if src.fields.answer is None else _gold_index(ans, opts, src.fields.answer, where)
    order = list(range(len(opts)))
    if src.fields.shuffle_choices:  # a fixed order per problem id: the same letters on every run and machine
        random.Random(hashlib.sha256(pid.encode()).hexdigest()).shuffle(order)
    return (None if gold is None else LETTERS[order.index(gold)]), [opts[k] for k in order]


def _tests(raw, where: str) -> list[dict]:
    from cotdistill.code_verify import normalise_tests

    try:
        return normalise_tests(raw)
    except ValueError as e:
        raise CotdistillError(f"{where}: {e}") from None


def _row_labels(src: HFSource):
    """Row i (0-based in the dataset) as an editor counts it: "row 3", with the file's line where a JSONL file's
    blank lines make the two differ ("row 3 (line 5)")."""
    p = Path(src.path)
    jsonl = p.suffix.lower() == ".jsonl" and p.is_file() and ("[" not in src.split)  # a sliced split shifts rows
    cache: list = []

    def label(i: int) -> str:  # called for error messages only: the file is read then, once
        if jsonl and not cache:
            cache.append([n for n, x in enumerate(p.read_bytes().splitlines(), 1) if x.strip()])
        lines = cache[0] if cache else None
        return f"row {i + 1}" + (f" (line {lines[i]})" if lines and i < len(lines) and lines[i] != i + 1 else "")
    return label


def _hf_problems(src: HFSource) -> list[Problem]:
    ds = _load_hf(src)
    where = f"source '{src.path}' split '{src.split}'"
    if len(ds) == 0:
        raise CotdistillError(f"{where}: the dataset is empty; check the file or the split selection")
    cols = set(ds.column_names)
    choice_cols = [src.fields.choices] if isinstance(src.fields.choices, str) else src.fields.choices or []
    tests_col = src.fields.tests or ("tests" if "tests" in cols else None)
    for field, col in (("question", src.fields.question), ("answer", src.fields.answer), ("id", src.fields.id),
                       ("tests", src.fields.tests), *(("choices", c) for c in choice_cols)):
        if col is not None and col not in cols:
            sep = next((c for c in (";", "\t", "|") if len(cols) == 1 and c in next(iter(cols))), None)
            fix = (f"the file looks {sep!r}-separated: save it comma-separated (or as JSONL)" if sep else
                   f"set source.fields.{field}")
            raise CotdistillError(
                f"{where}: column '{col}' (source.fields.{field}) not found; columns are {sorted(cols)}; {fix}"
            )
    problems, seen = [], {}
    origin = f"hf:{src.path}" + (f"/{src.name}" if src.name else "") + f"[{src.split}]"
    rows = ds if src.limit is None else ds.select(range(min(src.limit, len(ds))))
    label = _row_labels(src)
    for i, row in enumerate(rows):
        q = row[src.fields.question]
        if not isinstance(q, str) or not q.strip():
            raise CotdistillError(f"{where}: {label(i)}: field '{src.fields.question}' is empty or not text")
        pid = str(row[src.fields.id]) if src.fields.id else str(i)
        if pid in seen:
            raise CotdistillError(f"{where}: {label(i)}: id '{pid}' repeats {label(seen[pid])}; ids must be unique")
        seen[pid] = i
        ans = row[src.fields.answer] if src.fields.answer else None
        meta = {k: v for k, v in row.items() if k not in {src.fields.question, src.fields.answer, src.fields.id}}
        if src.fields.choices:
            ans, opts = _choice_problem(ans, row, src, pid, f"{where}: {label(i)}")
            meta = {k: v for k, v in meta.items() if k not in choice_cols}
            meta["choices"] = opts
        if tests_col:
            meta.pop(tests_col, None)
            meta["tests"] = _tests(row[tests_col], f"{where}: {label(i)}: field '{tests_col}'")
        problems.append(Problem(id=pid, question=q, answer=None if ans is None else str(ans),
                                source=origin, metadata=_json_safe(meta)))
    return problems


def _rg_problems(src: ReasoningGymSource) -> list[Problem]:
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if src.task not in DATASETS:
        close = difflib.get_close_matches(src.task, list(DATASETS), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(DATASETS)} tasks are registered"
        raise CotdistillError(f"source.task: unknown reasoning-gym task '{src.task}'; {hint}")
    try:
        ds = reasoning_gym.create_dataset(src.task, size=src.size, seed=src.seed, **src.config)
    except (TypeError, ValueError, AssertionError) as e:
        raise CotdistillError(f"source.config: invalid option for reasoning-gym task '{src.task}': {e}") from None
    problems = []
    for i in range(len(ds)):
        entry = _json_safe(ds[i])
        problems.append(Problem(
            id=f"{src.task}-{src.seed}-{i}",
            question=entry["question"],
            answer=None if entry.get("answer") is None else str(entry["answer"]),
            source=f"reasoning_gym:{src.task}",
            metadata={"rg_task": src.task, "rg_entry": entry,
                      "rg_config": {"size": src.size, "seed": src.seed, **_json_safe(src.config)}},
        ))
    return problems


def load_problems(src: HFSource | ReasoningGymSource) -> list[Problem]:
    return _hf_problems(src) if isinstance(src, HFSource) else _rg_problems(src)


def load_problem_file(path: Path) -> list[Problem]:
    return read_records(path, Problem, "problem")
