"""The wheel carries the prompt templates: installed (not an editable checkout) and run from another
working directory, a shipped template still loads."""

import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_ships_templates(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(wheels)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(wheels.glob("cotdistill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert (
        "cotdistill/templates/arithmetic_cot.yaml" in names and "cotdistill/templates/math_boxed_think.yaml" in names
    )
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"  # not the checkout
            f"sys.path.insert(0, {str(target)!r})\n"
            "import cotdistill.prompts as p\n"
            "t = p.load_template('arithmetic_cot')\n"
            "print(p.__file__); print(t.path)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-2000:]
    module, template = r.stdout.split()
    assert module.startswith(str(target)) and template.startswith(str(target / "cotdistill" / "templates"))
