"""Prompt templates from ``prompts/*.yaml``, rendered strictly into chat messages.

A template file has ``name``, optional ``system``, a Jinja ``user`` template (``{{ question }}``,
``{{ id }}``, ``{{ metadata.x }}`` and any ``prompt.variables``), ``answer_format`` (how the verify
stage finds the final answer) and ``think`` (whether traces must carry ``<think>...</think>``).
A variable that is not provided is an error naming the template, the variable and the problem.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.sandbox
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cotdistill.errors import CotdistillError, first_line
from cotdistill.loading import format_validation_error
from cotdistill.records import Message, Problem, TemplateInfo

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"  # a source checkout


def template_dirs() -> list[Path]:
    """Where a template name is looked up, first match wins: ``$COTDISTILL_PROMPTS`` (a user
    directory), ``./prompts`` in the working directory, the checkout's ``prompts/``, and the copy
    shipped inside the installed package (``cotdistill.templates``, from the same files)."""
    import os

    dirs = [Path(os.environ["COTDISTILL_PROMPTS"])] if os.environ.get("COTDISTILL_PROMPTS") else []
    dirs += [Path.cwd() / "prompts", PROMPTS_DIR, Path(__file__).resolve().parent / "templates"]
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


class FewShot(BaseModel):
    """One worked exchange placed before the question (literal text, not a Jinja template)."""

    model_config = ConfigDict(extra="forbid")
    user: str
    assistant: str


class TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    answer_format: Literal["boxed", "hashes", "final_answer", "answer_is", "choice", "code"] = "boxed"
    think: bool = False
    system: str | None = None
    examples: list[FewShot] = []  # few-shot turns, e.g. to show a small model the answer format
    user: str


@dataclass(frozen=True)
class PromptTemplate:
    spec: TemplateFile
    path: Path
    hash: str
    _system: jinja2.Template | None
    _user: jinja2.Template

    @property
    def info(self) -> TemplateInfo:
        return TemplateInfo(name=self.spec.name, hash=self.hash)

    def render(self, problem: Problem, variables: dict[str, Any] | None = None) -> list[Message]:
        if self.spec.answer_format == "code" and not problem.metadata.get("tests"):
            raise CotdistillError(
                f"template '{self.spec.name}' ({self.path}) is a code template but problem '{problem.id}' has no "
                f"tests; set source.fields.tests to the column of {{input, output}} or {{assert}} tests")
        ctx = {**(variables or {}), "question": problem.question, "id": problem.id,
               "metadata": problem.metadata}
        try:
            msgs = []
            if self._system is not None:
                msgs.append(Message(role="system", content=self._system.render(ctx)))
            for ex in self.spec.examples:
                msgs += [Message(role="user", content=ex.user), Message(role="assistant", content=ex.assistant)]
            msgs.append(Message(role="user", content=self._user.render(ctx)))
            return msgs
        except jinja2.sandbox.SecurityError as e:
            raise CotdistillError(f"template '{self.spec.name}' ({self.path}): refused by the template sandbox: "
                                  f"{first_line(e)}; a prompt template may only use the question, id, metadata and "
                                  f"prompt.variables") from None
        except jinja2.UndefinedError as e:
            m = re.search(r"'([^']+)' is undefined|has no attribute '([^']+)'", str(e))
            var = (m.group(1) or m.group(2)) if m else str(e)
            fix = ("set source.fields.choices to the options column(s)" if var == "choices" else
                   "add it to prompt.variables or to the problem's metadata")
            raise CotdistillError(
                f"template '{self.spec.name}' ({self.path}): variable '{var}' is missing for problem "
                f"'{problem.id}'; {fix}"
            ) from None


# a template file is untrusted text: Jinja's sandbox (as transformers renders chat templates) refuses attribute
# access to internals (``''.__class__.__mro__``) and the data it is given cannot be changed from a template
_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                                   autoescape=False)


def resolve_template_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    dirs = template_dirs()
    for d in dirs:
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted({q.stem for d in dirs for q in d.glob("*.yaml")}))
    raise CotdistillError(
        f"prompt.template: '{name_or_path}' is neither a template in "
        f"{', '.join(map(str, dirs)) or 'any template directory'} ({known}) nor an existing .yaml file; "
        "set COTDISTILL_PROMPTS to a directory of your own templates"
    )


def load_template(name_or_path: str) -> PromptTemplate:
    path = resolve_template_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CotdistillError(
            f"{path}: malformed YAML in prompt template ({e.__class__.__name__}); fix the syntax"
        ) from None
    if not isinstance(raw, dict):
        raise CotdistillError(f"{path}: a prompt template must be a mapping with at least 'name' and 'user'")
    try:
        spec = TemplateFile.model_validate(raw)
    except ValidationError as e:
        raise CotdistillError(format_validation_error(e, str(path))) from None
    try:
        system = _ENV.from_string(spec.system) if spec.system else None
        user = _ENV.from_string(spec.user)
    except jinja2.TemplateSyntaxError as e:
        raise CotdistillError(f"{path}: line {e.lineno}: Jinja syntax error in template ({e.message})") from None
    # everything that changes what is rendered or how it is checked (few-shot turns, think, answer format)
    canonical = json.dumps(spec.model_dump(mode="json", exclude={"description"}), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return PromptTemplate(spec=spec, path=path, hash=digest, _system=system, _user=user)
