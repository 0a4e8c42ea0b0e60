"""The ``cotdistill`` command: one subcommand per stage; it only parses and dispatches.

    cotdistill run CONFIG.yaml [--from STAGE] [--skip STAGE] [key.sub=value ...]
    cotdistill synthesize CONFIG.yaml [key.sub=value ...]
    cotdistill generate CONFIG.yaml [key.sub=value ...]
    cotdistill merge OUTPUT_DIR
    cotdistill filter CONFIG.yaml [key.sub=value ...]
    cotdistill train CONFIG.yaml [key.sub=value ...]
    cotdistill eval CONFIG.yaml [key.sub=value ...]
    cotdistill report RUN_DIR
    cotdistill verify INPUT.jsonl --output OUTPUT.jsonl
    cotdistill keys STAGE            # every config key of a stage, with its default and help
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import typer

from cotdistill.env import stdout_to_stderr
from cotdistill.errors import CotdistillError
from cotdistill.store import check_output_dir

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distill chain-of-thought from a vLLM teacher into a small student.")


@app.callback()
def _process(verbose: bool = typer.Option(False, "--verbose", "-v",
                                          help="INFO logs (ours, vLLM's, TRL's) on stderr; default WARNING")) -> None:
    """Runs before every command: logs to stderr (stdout holds the command's JSON summary alone, for jq), and a
    stop signal closes the engines this process started (cotdistill/lifecycle.py)."""
    from cotdistill.env import quiet_logs
    from cotdistill.lifecycle import install

    quiet_logs(verbose)
    install()


def _fail(e: CotdistillError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(code=2)


def _run_stage(stage: str, config_cls: str, config: str, overrides: list[str] | None) -> None:
    """Load the stage's config (YAML + overrides), run it, print its summary as JSON."""
    import importlib

    from cotdistill import config as cfgmod
    from cotdistill.loading import load_config

    try:
        cfg = load_config(getattr(cfgmod, config_cls), config, overrides or [])
        if getattr(cfg, "output_dir", None):
            check_output_dir(cfg.output_dir)
        with stdout_to_stderr():
            summary = importlib.import_module(f"cotdistill.{stage}").run(cfg)
    except CotdistillError as e:
        _fail(e)
    typer.echo(json.dumps(summary, indent=2))


_STAGE_CONFIGS = {"run": "RunConfig", "synthesize": "SynthesizeConfig", "generate": "GenerateConfig",
                  "filter": "FilterConfig", "logits": "LogitsConfig",
                  "train": "TrainConfig", "eval": "EvalConfig"}


def config_keys(cls, prefix: str = "", values=None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every field, nested config blocks expanded. ``values``: the block's
    default instance when its parent gives one (``Field(default_factory=lambda: SamplingConfig(n=1))``), so a
    nested key shows the default that applies there, not its class's."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    rows = []
    for name, f in cls.model_fields.items():
        ann = f.annotation
        key = f"{prefix}{name}"
        value = getattr(values, name) if values is not None else (
            PydanticUndefined if f.default is PydanticUndefined and f.default_factory is None else
            f.default_factory() if f.default_factory is not None else f.default)
        default = "(required)" if value is PydanticUndefined else repr(value)
        item = (getattr(ann, "__args__", None) or [None])[0] if getattr(ann, "__origin__", None) is list else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.append((key, ann.__name__, "", f.description or ann.__doc__ or ""))
            rows += config_keys(ann, key + ".", value if isinstance(value, BaseModel) else None)
        elif isinstance(item, type) and issubclass(item, BaseModel):  # a list of blocks: students[].name
            rows.append((key, f"list[{item.__name__}]", default, f.description or ""))
            rows += config_keys(item, key + "[].")
        else:
            typ = str(ann) if getattr(ann, "__args__", None) else getattr(ann, "__name__", str(ann))
            typ = re.sub(r"cotdistill\.config\.\w+\.|typing\.", "", typ)
            rows.append((key, typ, default, f.description or ""))
    return rows


@app.command()
def keys(stage: str = typer.Argument(..., help="run | synthesize | generate | filter | logits | train | eval")):
    """List every config key of a stage: type, default and what it does."""
    from cotdistill import config as cfgmod

    if stage not in _STAGE_CONFIGS:
        _fail(CotdistillError(f"unknown stage '{stage}'; one of: {', '.join(_STAGE_CONFIGS)}"))
    shared = config_keys(getattr(cfgmod, _STAGE_CONFIGS[stage]))
    sections = [("", shared)]
    if stage == "train":  # the fields every method has, then each method's own
        common = {r[0] for r in shared}
        for c in (cfgmod.TrainSFT, cfgmod.TrainGKD, cfgmod.TrainLogitKD, cfgmod.TrainKD):
            own = [r for r in config_keys(c) if r[0] not in common]
            sections.append((f"\n# {c.__doc__.split(':')[0]} ({c.__name__}):", own))
    for title, rows in sections:
        if title:
            typer.echo(title)
        if not rows:
            typer.echo("(no fields of its own)")
        for key, typ, default, help_ in rows:
            typer.echo(f"{key:<34} {typ:<28.28} {default:<14.14} {' '.join(help_.split())}")


@app.command()
def synthesize(
    config: str = typer.Argument(..., help="YAML config of the synthesis stage"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
):
    """Problem synthesis: the teacher writes problems (few-shot, topics, magpie), the problem filters keep some."""
    _run_stage("synthesize", "SynthesizeConfig", config, overrides)


@app.command()
def generate(
    config: str = typer.Argument(..., help="YAML config of the generation stage"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
):
    """Teacher generation: problems -> prompt template -> vLLM teacher -> traces.jsonl."""
    _run_stage("generate", "GenerateConfig", config, overrides)


@app.command("filter")
def filter_(
    config: str = typer.Argument(..., help="YAML config of the filter stage"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
):
    """Verify and filter traces into a TRL training set with a dataset card."""
    _run_stage("filter", "FilterConfig", config, overrides)


@app.command()
def logits(
    config: str = typer.Argument(..., help="YAML config of the logits stage"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
):
    """Teacher top-k logprobs of the kept traces -> a columnar cache for cached-logit KD (logit_kd)."""
    _run_stage("logits", "LogitsConfig", config, overrides)


@app.command()
def train(
    config: str = typer.Argument(..., help="YAML config of the distill stage"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
):
    """Distill the student: method sft | gkd | distill | logit_kd | kd | on_policy | mutual. `student:` is a hub id
    or a model folder; `cotdistill student OUT` makes a fresh one."""
    _run_stage("train", "TrainConfig", config, overrides)


@app.command()
def student(
    out: str = typer.Argument(..., help="folder to write the starting model into"),
    tokenizer: str = typer.Option("data/teacher", help="the vocabulary to share (the teacher's, for logit methods)"),
    hidden: int = typer.Option(128), layers: int = typer.Option(2), heads: int = typer.Option(4),
    init_std: float = typer.Option(0.08, help="weights' std (about 1/sqrt(hidden) learns sooner than 0.02)"),
    seed: int = typer.Option(0),
    from_teacher: str | None = typer.Option(None, help="instead: keep every --every-th block of this teacher"),
    every: int = typer.Option(2),
):
    """A starting model for `cotdistill train`: a fresh Llama on TOKENIZER's vocabulary, or the teacher's own
    blocks (--from-teacher). Prints the folder as JSON."""
    from pydantic import ValidationError

    from cotdistill import student_init
    from cotdistill.config import StudentFromTeacher, StudentInit, VLLMTeacher

    try:
        check_output_dir(out, "OUT")
        if from_teacher:
            spec, teacher = StudentFromTeacher(from_teacher=True, every=every), VLLMTeacher(model=from_teacher)
        else:
            spec = StudentInit(hidden=hidden, layers=layers, heads=heads, init_std=init_std, seed=seed)
            teacher = VLLMTeacher(model=tokenizer)
        if Path(out).exists() and any(Path(out).iterdir()):
            raise CotdistillError(f"OUT: '{out}' already holds files; give a new folder")
        work = Path(out).parent / f".{Path(out).name}.tmp"
        shutil.rmtree(work, ignore_errors=True)  # a stopped earlier call's
        try:
            with stdout_to_stderr():
                summary = student_init.run(spec, teacher, work)
            if Path(out).exists():
                Path(out).rmdir()  # empty (checked above)
            Path(summary["model"]).rename(out)  # whole or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except ValidationError as e:
        err = e.errors()[0]
        where = "-".join(map(str, err["loc"])).replace("_", "-")
        _fail(CotdistillError(f"{'--' + where if where else 'options'}: {err['msg'].removeprefix('Value error, ')}"))
    except (CotdistillError, ValueError) as e:
        _fail(CotdistillError(str(e).splitlines()[0]))
    typer.echo(json.dumps({"model": out}))


@app.command("eval")
def eval_(
    config: str = typer.Argument(..., help="YAML config of the eval stage"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
):
    """Evaluate models on benchmarks: pass@1, pass@k, maj@k with 95% intervals -> results.json."""
    _run_stage("evaluate", "EvalConfig", config, overrides)


@app.command("run")
def run_(
    config: str = typer.Argument(..., help="YAML config of the whole pipeline (see data/configs/run_demo.yaml)"),
    overrides: list[str] | None = typer.Argument(None, help="key.sub=value overrides"),
    from_stage: str | None = typer.Option(None, "--from", help="re-run this stage and everything after it"),
    skip: list[str] | None = typer.Option(
        None, "--skip", help="leave this stage out (repeatable; 'train' = all students)"
    ),
):
    """The whole pipeline: generate -> filter -> train the students -> eval -> report, with retention."""
    from cotdistill import run as runmod
    from cotdistill.config import RunConfig
    from cotdistill.loading import load_config

    try:
        cfg = load_config(RunConfig, config, overrides or [])
        with stdout_to_stderr():
            summary = runmod.run(cfg, from_stage=from_stage, skip=skip or [])
    except CotdistillError as e:
        _fail(e)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def report(run_dir: str = typer.Argument(..., help="a run directory holding eval/filter/train outputs")):
    """Write RUN_DIR/report/report.md with PNG plots from everything found under RUN_DIR."""
    from cotdistill.report import write_report

    try:
        path = write_report(run_dir)
    except CotdistillError as e:
        _fail(e)
    typer.echo(str(path))


@app.command()
def merge(output_dir: str = typer.Argument(..., help="directory holding the shard files")):
    """Merge generation shards into traces.jsonl after checking completeness."""
    from cotdistill.shards import merge as do_merge

    try:
        summary = do_merge(output_dir)
    except CotdistillError as e:
        _fail(e)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def verify(
    input: str = typer.Argument(..., help="JSONL with at least 'completion' and 'gold' per line"),
    output: str = typer.Option(..., "--output", "-o", help="where to write the annotated JSONL"),
    workers: int = typer.Option(0, help="worker processes (0: one per core)"),
    timeout: float = typer.Option(10.0, help="hard time limit per item, seconds"),
):
    """Audit any dataset: add 'extracted' and 'correct' (true/false/null) to every line."""
    from cotdistill.verify_pool import audit_file

    try:
        summary = audit_file(input, output, workers=workers, timeout_s=timeout)
    except CotdistillError as e:
        _fail(e)
    typer.echo(json.dumps(summary, indent=2))


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":
    app()
