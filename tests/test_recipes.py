"""Every shipped recipe in data/configs parses and validates (the GPU ones cannot run here)."""

import pytest

from cotdistill.config import FilterConfig, GenerateConfig, load_config
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
