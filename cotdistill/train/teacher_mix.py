"""Who grades on_policy's rollouts (a module of the on_policy method): one teacher, or several, each prompt routed
by its problem's fields (``route``: e.g. {domain: [math]} to a math teacher, the rest to a general one) and, among
the teachers a prompt may go to, by a hash of its problem id against the weights, so a problem meets the same
teacher on every run, resumed or not. Every teacher starts before training (an in-process engine, or a server this
run starts) and stops when training ends or fails."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cotdistill.config import TrainConfig, VLLMTeacher
from cotdistill.errors import CotdistillError


class OneTeacher:
    """One teacher grading every rollout."""

    def __init__(self, name: str, scorer):
        self.name, self.scorer, self.info = name, scorer, scorer.info
        self.members = [scorer]

    def grade(self, pids, seqs, starts, k) -> tuple[list[dict], list[str]]:
        return self.scorer.score(seqs, starts, k), [self.name] * len(seqs)

    def close(self) -> None:
        self.scorer.close()


def hash_unit(pid: str) -> float:
    """A problem id's fixed point in [0, 1)."""
    return int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "little") / 2 ** 64


def pick_by_weight(pid: str, weights: list[float]) -> int:
    """The index the id's hash falls on when [0, 1) is cut in proportion to the weights."""
    u, total, acc = hash_unit(pid), sum(weights), 0.0
    for i, w in enumerate(weights):
        acc += w / total
        if u < acc:
            return i
    return len(weights) - 1


def route_matches(route: dict[str, list[str]] | None, fields: dict[str, str]) -> bool:
    return route is not None and all(fields.get(f) in vals for f, vals in route.items())


def assign_teachers(teachers, rows: list[dict], where: str) -> dict[str, int]:
    """problem id -> the index of the teacher that grades it. A prompt goes to the teachers whose route matches
    its fields, else to those without a route; a prompt no teacher may take stops the run here, before any
    teacher starts."""
    routed = any(t.route for t in teachers)
    if routed and rows and "problem_fields" not in rows[0]:
        raise CotdistillError(f"{where}: the prompts have no problem_fields column, which teachers.route selects by "
                              f"(cotdistill filter writes it); re-run the filter stage, or drop route")
    out = {}
    for r in rows:
        fields = json.loads(r["problem_fields"]) if routed else {}
        allowed = [i for i, t in enumerate(teachers) if route_matches(t.route, fields)] or \
            [i for i, t in enumerate(teachers) if t.route is None]
        if not allowed:
            keys = sorted({f for t in teachers for f in t.route})
            shown = {k: fields.get(k) for k in keys}
            raise CotdistillError(f"{where}: problem '{r['problem_id']}' ({shown}) matches no teacher's route and "
                                  f"every teacher has one; add a teacher without route to grade the rest")
        out[r["problem_id"]] = allowed[pick_by_weight(r["problem_id"], [teachers[i].weight for i in allowed])]
    return out


class TeacherMix:
    """Several teachers; each prompt is graded by the one ``assign_teachers`` gave it."""

    def __init__(self, named: list[tuple[str, object]], assigned: dict[str, int]):
        self.names, self.members, self.assigned = [n for n, _ in named], [s for _, s in named], assigned
        backends = {m.info.backend for m in self.members}
        self.info = self.members[0].info.model_copy(update={
            "model": "+".join(self.names), "backend": backends.pop() if len(backends) == 1 else "vllm"})

    def grade(self, pids, seqs, starts, k) -> tuple[list[dict], list[str]]:
        who = [self.assigned[p] for p in pids]
        out: list[dict | None] = [None] * len(seqs)
        for m in sorted(set(who)):
            idx = [i for i, w in enumerate(who) if w == m]
            for i, g in zip(idx, self.members[m].score([seqs[i] for i in idx], [starts[i] for i in idx], k)):
                out[i] = g
        return out, [self.names[w] for w in who]

    def prompts_per_teacher(self) -> dict[str, int]:
        return {n: sum(1 for i in self.assigned.values() if i == m) for m, n in enumerate(self.names)}

    def close(self) -> None:
        for m in self.members:
            m.close()


def make_scorer(cfg: TrainConfig, rows: list[dict]):
    """The grader of the rollouts: one teacher, or the named teachers with each prompt assigned (checked before
    any teacher starts)."""
    if not cfg.teachers:
        one = start_teacher(cfg, cfg.teacher)
        return OneTeacher(one.info.model, one)
    assigned = assign_teachers(cfg.teachers, rows, f"{cfg.dataset_dir}/prompts")
    named = []
    try:
        for t in cfg.teachers:
            named.append((t.name, start_teacher(cfg, t.teacher)))
    except BaseException:
        for _, sc in named:
            sc.close()
        raise
    return TeacherMix(named, assigned)


def start_teacher(cfg: TrainConfig, t):
    """The teacher backend that grades rollouts: a served teacher block as given, a path as an in-process engine,
    or, with ``serve_teacher``, as a vLLM server this run starts and stops."""
    from cotdistill.teachers import make_teacher

    if isinstance(t, str):
        t = VLLMTeacher(model=t, max_model_len=cfg.max_length + cfg.on_policy.max_new_tokens, enforce_eager=True)
    if cfg.on_policy.serve_teacher and isinstance(t, VLLMTeacher):
        from cotdistill.teachers.served import ServedTeacher

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:  # every rank would start a server of its own, each taking the teacher's memory
            raise CotdistillError(f"on_policy.serve_teacher: this run has {world} processes and each would start "
                                  f"its own teacher server; start one yourself and give teacher: {{backend: openai, "
                                  f"base_url: ..., model: ..., tokenizer: ...}} (every process grades through it)")
        return ServedTeacher(t, Path(cfg.output_dir) / "teacher_server.log", seed=cfg.seed)
    return make_teacher(t, seed=cfg.seed)
