"""Every shipped recipe in data/configs parses and validates (the GPU ones cannot run here)."""

import pytest

from cotdistill.config import EvalConfig, FilterConfig, GenerateConfig, TrainConfig, load_config
from cotdistill.prompts import load_template
from conftest import ROOT

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
    from cotdistill.run import Plan

    cfg = load_config(RunConfig, path)
    plan = Plan(cfg)  # every embedded stage config resolves
    assert cfg.output_dir.startswith("runs/") and plan.order[-2:] == ["eval", "report"]
    load_template(plan.configs["generate"].prompt.template)
    for b in cfg.eval.benchmarks:
        load_template(b.template)
    if path.name.endswith("_gpu.yaml"):  # real users' recipes: hub ids and the GPU memory each stage needs
        text = path.read_text()
        assert "GPU memory" in text and "/" in cfg.teacher.model and not (ROOT / cfg.teacher.model).exists()
