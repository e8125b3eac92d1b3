"""The import contract (pyproject.toml, [tool.importlinter]) holds, and it bites on a back-import."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "experiments", "pipelines", "beton_builders", "analysis", "lmc")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path):
    """A copy of the packages and the contract, to break on purpose."""
    if not LINT.exists():
        pytest.skip("lint-imports is not installed in this environment (make setup installs it)")
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contract_holds(tree):
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("where, statement, broken", [
    # The base reaching up, even inside a function, to dodge a cycle at import time.
    ("lmc/paths.py", "def _late():\n    from experiments import config  # noqa\n", "lmc.paths -> experiments.config"),
    # A stage reaching into a later one.
    ("beton_builders/prepare.py", "from pipelines import augment  # noqa\n", "beton_builders.prepare -> pipelines"),
    # analysis pulling in torch.
    ("analysis/tables.py", "import torch  # noqa\n", "analysis.tables -> torch"),
])
def test_a_back_import_breaks_it(tree, where, statement, broken):
    path = tree / where
    path.write_text(path.read_text() + "\n\n" + statement)
    result = lint(tree)
    assert result.returncode != 0
    assert broken in result.stdout
