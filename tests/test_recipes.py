"""Every shipped recipe in data/configs parses and validates (the GPU ones cannot run here)."""

import pytest
from conftest import ROOT

from cotdistill.config import EvalConfig, FilterConfig, GenerateConfig, TrainConfig
from cotdistill.loading import load_config
from cotdistill.prompts import load_template

RECIPES = sorted((ROOT / "data/configs").glob("generate_*.yaml"))


def test_recipes_exist():
    assert len(RECIPES) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    cfg = load_config(GenerateConfig, path)
    load_template(cfg.prompt.template)
    assert cfg.output_dir.startswith("runs/")


@pytest.mark.parametrize("path", sorted((ROOT / "data/configs").glob("filter_*.yaml")), ids=lambda p: p.name)
def test_filter_recipe_validates(path):
    assert load_config(FilterConfig, path).output_dir.startswith("runs/")


@pytest.mark.parametrize("path", sorted((ROOT / "data/configs").glob("train_*.yaml")), ids=lambda p: p.name)
def test_train_recipe_validates(path):
    assert load_config(TrainConfig, path).output_dir.startswith("runs/")


@pytest.mark.parametrize("path", sorted((ROOT / "data/configs/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    import yaml

    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] in {"MULTI_GPU", "MULTI_CPU", "DEEPSPEED", "FSDP"} and cfg["num_processes"] >= 1


@pytest.mark.parametrize("path", sorted((ROOT / "data/configs").glob("eval_*.yaml")), ids=lambda p: p.name)
def test_eval_recipe_validates(path):
    cfg = load_config(EvalConfig, path)
    assert cfg.output_dir.startswith("runs/") and {m.role for m in cfg.models} >= {"teacher", "student"}
    for b in cfg.benchmarks:
        load_template(b.template)


@pytest.mark.parametrize("path", sorted((ROOT / "data/configs").glob("run_*.yaml")), ids=lambda p: p.name)
def test_run_recipe_validates(path):
    from cotdistill.config import RunConfig
    from cotdistill.plan import Plan

    cfg = load_config(RunConfig, path)
    plan = Plan(cfg)  # every embedded stage config resolves
    assert cfg.output_dir.startswith("runs/") and plan.order[-2:] == ["eval", "report"]
    load_template(plan.configs["generate"].prompt.template)
    for b in cfg.eval.benchmarks:
        load_template(b.template)
    if path.name.endswith("_gpu.yaml"):  # real users' recipes: hub ids and the GPU memory each stage needs
        text = path.read_text()
        assert "GPU memory" in text and "/" in cfg.teacher.model and not (ROOT / cfg.teacher.model).exists()


# Each chain of stage recipes in order: every runs/ path a later config reads is written by an earlier one.
CHAINS = {
    "math": [
        "generate_math_qwen7b",
        "filter_math_qwen7b",
        "train_sft_math_1p5b",
        "train_gkd_qwen",
        "train_logit_kd_math_1p5b",
        "eval_math_gpu",
    ],
    "gsm8k_r1": ["generate_gsm8k_server", "filter_gsm8k_r1_7b", "train_sft_qwen_lora", "eval_gsm8k_r1_gpu"],
    "demo_stages": [
        "generate_demo",
        "filter_demo",
        "train_sft_demo",
        "logits_demo",
        "train_logit_kd_demo",
        "eval_demo",
    ],
}
EXTERNAL = {"runs/tiny-student", "runs/tiny-teacher"}  # built by the commands in the demo recipes comments


def _load(name):
    from cotdistill.config import LogitsConfig

    kind = {"generate": GenerateConfig, "filter": FilterConfig, "train": TrainConfig, "logits": LogitsConfig,
            "eval": EvalConfig}[name.split("_")[0]]
    return load_config(kind, ROOT / "data/configs" / f"{name}.yaml")


def _reads_writes(cfg) -> tuple[set[str], set[str]]:
    from cotdistill.config import LogitsConfig

    if isinstance(cfg, GenerateConfig):
        return set(), {cfg.output_dir, f"{cfg.output_dir}/logprobs.jsonl"}
    if isinstance(cfg, FilterConfig):
        return {cfg.generate_dir}, {cfg.output_dir}
    if isinstance(cfg, LogitsConfig):
        return {cfg.filter_dir, cfg.teacher}, {cfg.output_dir}
    if isinstance(cfg, TrainConfig):
        reads = (cfg.student, cfg.dataset_dir, getattr(cfg, "logprobs", None), getattr(cfg, "teacher", None))
        return {p for p in reads if p}, {f"{cfg.output_dir}/final"}
    return {m.serve.model for m in cfg.models} | set(cfg.train_data), {cfg.output_dir}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_recipe_chains_read_what_an_earlier_step_wrote(chain):
    written: set[str] = set()
    for name in CHAINS[chain]:
        reads, writes = _reads_writes(_load(name))
        for path in reads:
            if path.startswith("runs/") and path not in EXTERNAL:
                assert path in written, f"{name}.yaml reads {path}, which no earlier step of the {chain} chain writes"
        written |= writes


@pytest.mark.parametrize("chain", list(CHAINS))
def test_recipe_chains_hold_out_their_benchmarks(chain):
    """No chain generates its training data from a split it evaluates on, and the filter drops overlaps with
    every benchmark the chain scores."""
    key = lambda s: (getattr(s, "path", None), getattr(s, "name", None), getattr(s, "split", None))
    cfgs = [_load(n) for n in CHAINS[chain]]
    sources = {key(c.source) for c in cfgs if isinstance(c, GenerateConfig)}
    benches = {key(b.source) for c in cfgs if isinstance(c, EvalConfig) for b in c.benchmarks}
    assert benches and not sources & benches
    held_out = {key(s) for c in cfgs if isinstance(c, FilterConfig) for s in c.decontam.eval_sets}
    if chain != "demo_stages":  # the demo's local files are disjoint by construction (scripts/make_problems.py)
        assert benches <= held_out


GPU_RECIPES = sorted(p for p in (ROOT / "data/configs").glob("*.yaml")
                     if "GPU memory" in p.read_text() and p.name.split("_")[0] in ("generate", "train", "eval", "run"))


def test_every_gpu_recipe_is_sized():
    names = {p.name for p in GPU_RECIPES}
    assert {"run_gsm8k_qwen_gpu.yaml", "run_math_r1_gpu.yaml", "train_gkd_qwen.yaml", "eval_math_gpu.yaml",
            "generate_math_qwen7b.yaml", "train_sft_math_1p5b.yaml"} <= names


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: p.name)
def test_gpu_recipe_header_states_the_computed_memory(path):
    from cotdistill import memory

    computed = {k: v["total"] for k, v in memory.estimate(path).items()}
    assert memory.stated(path.read_text()) == computed


def test_memory_estimate_adds_up_its_parts():
    from cotdistill import memory

    q7, q15 = memory.ARCH["Qwen/Qwen2.5-Math-7B-Instruct"], memory.ARCH["Qwen/Qwen2.5-Math-1.5B-Instruct"]
    s = memory.serve(q7, 4096, 1)
    assert s["weights"] == 14.2  # 7.62e9 x 2 bytes
    assert s["kv_cache"] == pytest.approx(2 * 28 * 4 * 128 * 2 * 4096 / 2**30, abs=0.1)
    t = memory.train(q15, "gkd", 4096, 2, teacher=q7)
    assert t["weights_fp32"] == pytest.approx(1.54e9 * 4 / 2**30, abs=0.1)
    assert t["grads_and_adamw"] == pytest.approx(1.54e9 * 12 / 2**30, abs=0.1)
    assert t["total"] == pytest.approx(sum(v for k, v in t.items() if k != "total"), abs=0.4)
    lora = memory.train(q15, "sft", 4096, 2, lora=True)
    assert lora["grads_and_adamw"] < t["grads_and_adamw"] / 50
    full = memory.train(q15, "gkd", 4096, 2, teacher=q7, chunk=0)  # TRL's unchunked JSD (sharded runs)
    assert memory.train(q15, "logit_kd", 4096, 2)["logits"] < full["logits"] / 5  # chunked vs full logits
    assert t["logits"] < full["logits"] / 5 and t["teacher_logits"] < full["teacher_logits"] / 5  # gkd chunked


@pytest.mark.slow
@pytest.mark.parametrize("name", ["generate_demo", "generate_reasoning_gym"])
def test_shipped_first_stage_configs_run_from_a_fresh_clone(name, tmp_path):
    """A CPU chain's first stage runs as shipped (only the problem count and output folder changed): its teacher is
    in the repository, not a runs/ folder a newcomer would have to build first."""
    import json
    import subprocess
    import sys

    overrides = [f"output_dir={tmp_path / 'out'}", "sampling.n=1", "progress=false",
                 "source.limit=3" if name == "generate_demo" else "source.size=3"]
    cfg = load_config(GenerateConfig, ROOT / "data/configs" / f"{name}.yaml", overrides)
    assert (ROOT / cfg.teacher.model).is_dir()
    # its own process, from the repository root, as a newcomer runs it (and no second engine in this one)
    p = subprocess.run([sys.executable, "-m", "cotdistill", "generate", f"data/configs/{name}.yaml", *overrides],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)
    assert summary["traces"] == 3 and summary["complete"]
