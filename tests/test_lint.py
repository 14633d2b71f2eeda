"""`make lint` passes on the tree: ruff (pinned in the dev extra, rules in pyproject.toml's [tool.ruff])."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_the_tree_passes_ruff():
    ruff = Path(sys.executable).parent / "ruff"
    ruff = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[dev]' (it is pinned there)"
    result = subprocess.run([ruff, "check", "yochameleon", "evaluation", "tests", "hydra_plugins", "benchmarks"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
