"""The eval stage's results.json as typed records (a leaf module): what evaluate writes and compare, report and
run read, so that a score is ``results.models[name].scores[bench].pass1.value`` in one place, not a chain of
string keys in four.

    results = EvalResults.load(run_dir / "eval" / "results.json")
    results.pass1("sft@0", "gsm8k").value

Extra keys are kept as they are (``extra="allow"``): pass@k / maj@k estimates beside pass@1, the distillation
table that ``cotdistill run`` adds, fields a later version writes. Saving writes what was loaded or set.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cotdistill.store import write_atomic


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Estimate(_Open):
    value: float
    ci95: list[float] | None = None


class BenchmarkScores(_Open):
    """One model on one benchmark: metrics.summarize's estimates (``pass@1``, ``pass@k``, ``maj@k``, each a value
    with a 95% interval) and sample statistics, plus what eval adds (verifier errors, generation cost)."""

    problems: int | None = None
    samples_per_problem: int | None = None
    mean_completion_tokens: float | None = None
    truncation_rate: float | None = None
    cannot_tell_rate: float | None = None
    verifier_errors: int | None = None
    generation: dict | None = None
    diversity: dict | None = None  # metrics.diversity: distinct-n, pairwise similarity, all-agree share

    def estimates(self) -> dict[str, Estimate]:
        """Every ``metric@k`` estimate, pass@1 first."""
        found = {k: Estimate.model_validate(v) for k, v in (self.model_extra or {}).items() if "@" in k}
        return dict(sorted(found.items(), key=lambda kv: kv[0] != "pass@1"))

    @property
    def pass1(self) -> Estimate:
        return Estimate.model_validate(self.model_extra["pass@1"])


class ModelResult(_Open):
    role: str
    dtype: str | None = None
    identity: dict | None = None
    scores: dict[str, BenchmarkScores] = Field(default_factory=dict)
    retention: dict[str, float | None] | None = None  # per benchmark: pass@1 / the teacher's


class EvalResults(_Open):
    models: dict[str, ModelResult] = Field(default_factory=dict)
    benchmarks: dict[str, dict] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    sampling: dict | None = None
    versions: dict[str, str] | None = None
    ci: str | None = None
    machine: dict | None = None
    distillation: dict | None = None  # cotdistill run's table (compare.distillation_table)

    @classmethod
    def load(cls, path: str | Path) -> EvalResults:
        return cls.model_validate_json(Path(path).read_text())

    @classmethod
    def of(cls, results: EvalResults | dict) -> EvalResults:
        return results if isinstance(results, EvalResults) else cls.model_validate(results)

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), json.dumps(self.dump(), indent=2) + "\n")

    def dump(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)

    def pass1(self, model: str, benchmark: str) -> Estimate:
        return self.models[model].scores[benchmark].pass1

    def teacher(self) -> str | None:
        """The first model evaluated in the teacher role (retention is against it)."""
        return next((n for n, m in self.models.items() if m.role == "teacher"), None)
