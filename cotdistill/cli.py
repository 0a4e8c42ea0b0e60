"""The ``cotdistill`` command: one subcommand per stage; it only parses and dispatches.

    cotdistill generate CONFIG.yaml [key.sub=value ...]
    cotdistill merge OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from cotdistill.errors import CotdistillError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distill chain-of-thought from a vLLM teacher into a small student.")


def _fail(e: CotdistillError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(code=2)


@app.command()
def generate(
    config: str = typer.Argument(..., help="YAML config of the generation stage"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides"),
):
    """Teacher generation: problems -> prompt template -> vLLM teacher -> traces.jsonl."""
    from cotdistill import generate as stage
    from cotdistill.config import GenerateConfig, load_config

    try:
        summary = stage.run(load_config(GenerateConfig, config, overrides or []))
    except CotdistillError as e:
        _fail(e)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def merge(output_dir: str = typer.Argument(..., help="directory holding the shard files")):
    """Merge generation shards into traces.jsonl after checking completeness."""
    from cotdistill.shards import merge as do_merge

    try:
        summary = do_merge(output_dir)
    except CotdistillError as e:
        _fail(e)
    typer.echo(json.dumps(summary, indent=2))


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":
    app()
