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


def test_the_dead_code_is_gone():
    # Issue 24.13: defined, never called (templates.fill only by a test); io.write_json is used now.
    from yochameleon import io
    from yochameleon.data import templates
    from yochameleon.data.concept import ConceptData
    from yochameleon.toyworld import concepts

    assert not hasattr(ConceptData, "held_out_photos") and not hasattr(ConceptData, "report_split")
    assert not hasattr(concepts, "concept_thing") and not hasattr(templates, "fill")
    assert any("write_json(" in p.read_text() for p in (REPO / "yochameleon").rglob("*.py") if p.name != "io.py")
    assert callable(io.write_json)


def test_no_function_runs_over_sixty_lines_unless_its_docstring_says_why():
    # Issue 26.5: a function a reader takes in at once. A longer one says why in a docstring line "Long: ...".
    import ast

    long = []
    for path in sorted([*(REPO / "yochameleon").rglob("*.py"), *(REPO / "evaluation").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            says_why = any(line.strip().startswith("Long: ") for line in (ast.get_docstring(node) or "").splitlines())
            if lines > 60 and not says_why:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines with no 'Long: <why>' in their docstring:\n" + "\n".join(long)
