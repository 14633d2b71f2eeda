"""Installable like a library: a built wheel (configs as package data) trains from another directory;
a user's own conf/concept/<name>.yaml in the working directory (or $YOCHAMELEON_CONFIG_PATH) is found."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, compose
from yochameleon.config import CONFIG_DIR
from yochameleon.errors import YoChameleonError

# What a source checkout holds that a wheel build must not read (or write into the repository).
BUILD_IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "outputs", "build", "dist",
                                      ".pytest_cache", "wandb", ".cache")

USER_CONCEPT = """\
# a user's own concept: the embedded corgi photos under another name
name: mydog
photos: ${asset:demo/corgi/train}
negatives:
  - ${asset:demo/negatives/train}
"""


def _user_conf(root: Path) -> Path:
    (root / "conf" / "concept").mkdir(parents=True)
    (root / "conf" / "concept" / "mydog.yaml").write_text(USER_CONCEPT)
    return root / "conf"


def test_user_concept_in_the_working_directory_is_found(tmp_path, monkeypatch):
    _user_conf(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("YOCHAMELEON_CONFIG_PATH", raising=False)
    cfg = compose(["+concept=mydog"], tmp_path)
    assert cfg.concept.name == "mydog" and Path(cfg.concept.photos).is_dir()
    assert compose(["+concept=demo"], tmp_path).concept.name == "corgi"  # the shipped ones still resolve


def test_user_concept_with_a_shipped_name_wins_and_a_note_names_both(tmp_path, monkeypatch, caplog):
    # Issue 24.11: the user's ./conf is searched before the shipped configs (a Hydra SearchPathPlugin).
    (tmp_path / "conf" / "concept").mkdir(parents=True)
    (tmp_path / "conf" / "concept" / "demo.yaml").write_text(USER_CONCEPT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("YOCHAMELEON_CONFIG_PATH", raising=False)
    with caplog.at_level("WARNING", logger="yochameleon.config"):
        cfg = compose(["+concept=demo"], tmp_path)
    assert cfg.concept.name == "mydog"  # the user's file, not the shipped corgi ...
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("note: ")]
    assert notes == [f"note: {tmp_path / 'conf' / 'concept' / 'demo.yaml'} is used instead of the shipped "
                     f"{CONFIG_DIR / 'concept' / 'demo.yaml'} (same name)"]  # ... in one line naming both


def test_config_path_variable_comes_before_the_working_directory_and_the_shipped_configs(tmp_path, monkeypatch):
    elsewhere = _user_conf(tmp_path / "configs")
    (elsewhere / "concept" / "demo.yaml").write_text(USER_CONCEPT.replace("name: mydog", "name: fromenv"))
    (tmp_path / "conf" / "concept").mkdir(parents=True)
    (tmp_path / "conf" / "concept" / "demo.yaml").write_text(USER_CONCEPT.replace("name: mydog", "name: fromcwd"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOCHAMELEON_CONFIG_PATH", str(elsewhere))
    assert compose(["+concept=demo"], tmp_path).concept.name == "fromenv"
    monkeypatch.delenv("YOCHAMELEON_CONFIG_PATH")
    assert compose(["+concept=demo"], tmp_path).concept.name == "fromcwd"


def test_user_config_path_variable_adds_directories(tmp_path, monkeypatch):
    elsewhere = _user_conf(tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # no ./conf here
    monkeypatch.setenv("YOCHAMELEON_CONFIG_PATH", str(elsewhere))
    assert compose(["+concept=mydog"], tmp_path).concept.name == "mydog"
    monkeypatch.setenv("YOCHAMELEON_CONFIG_PATH", str(tmp_path / "missing"))
    with pytest.raises(Exception) as raised:  # Hydra wraps it; the command line prints the message
        compose(["+concept=mydog"], tmp_path)
    causes, error = [], raised.value
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    ours = [e for e in causes if isinstance(e, YoChameleonError)]
    assert ours and re.search(r"YOCHAMELEON_CONFIG_PATH names .*missing, which is not a directory", str(ours[0]))


@pytest.mark.slow
def test_wheel_installed_copy_trains_toy_bo_from_another_directory(tmp_path, cache_dir):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=BUILD_IGNORE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip"]
    wheels = tmp_path / "wheels"
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("yochameleon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "yochameleon/conf/train.yaml" in names and "yochameleon/conf/concept/toy-bo.yaml" in names
    assert "yochameleon/conf/toy/concept.yaml" in names and "evaluation/sets/dreambooth/split.json" in names
    assert "hydra_plugins/yochameleon_searchpath/__init__.py" in names  # the user's configs come first
    site = tmp_path / "site"
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert not (site / "yochameleon" / "__editable__").exists() and (site / "yochameleon" / "conf").is_dir()

    work = tmp_path / "elsewhere"  # a directory with nothing of the repository in it
    work.mkdir()
    run_env = {**env, "PYTHONPATH": str(site), "YOCHAMELEON_CACHE": str(cache_dir)}
    probe = subprocess.run(
        [sys.executable, "-c", "import json, sys, yochameleon, evaluation, yochameleon.config as c; "
         "print(json.dumps([sys.path, yochameleon.__file__, evaluation.__file__, str(c.CONFIG_DIR)]))"],
        capture_output=True, text=True, cwd=work, env=run_env, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    path, package, harness, config_dir = json.loads(probe.stdout.splitlines()[-1])
    assert str(REPO) not in [str(Path(p).resolve()) if p else str(work) for p in path]  # the checkout is not on it
    assert Path(package).is_relative_to(site) and Path(harness).is_relative_to(site)
    assert Path(config_dir) == site / "yochameleon" / "conf"

    result = subprocess.run(
        [sys.executable, "-m", "yochameleon.train", "+concept=toy-bo", "trainer.max_steps=2", "trainer.eval_every=2",
         "logger=none", "trainer.progress=false", "trainer.sample_images=false", "run_name=installed"],
        capture_output=True, text=True, cwd=work, env=run_env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = work / "outputs" / "bo" / "installed"
    assert (run_dir / "adapter" / "adapter.safetensors").is_file() and "done: 2 steps" in result.stdout
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2

    # A user's conf/concept/<shipped name>.yaml wins over the installed copy's (issue 24.11).
    (work / "conf" / "concept").mkdir(parents=True)
    (work / "conf" / "concept" / "demo.yaml").write_text(USER_CONCEPT)
    shown = subprocess.run([sys.executable, "-m", "yochameleon.train", "+concept=demo", "--cfg", "job"],
                           capture_output=True, text=True, cwd=work, env=run_env, timeout=300)
    assert shown.returncode == 0 and "name: mydog" in shown.stdout, shown.stderr[-2000:]
    assert "is used instead of the shipped" in shown.stderr

    # The console scripts exist and run from the installed copy.
    scripts = {p.name for p in (site / "bin").iterdir()}
    assert {"yochameleon-train", "yochameleon-prepare", "yochameleon-answer", "yochameleon-generate",
            "yochameleon-compare", "yochameleon-evaluate", "yochameleon-eval-compare"} <= scripts
    helped = subprocess.run([sys.executable, str(site / "bin" / "yochameleon-answer"), "--help"],
                            capture_output=True, text=True, cwd=work, env=run_env, timeout=120)
    assert helped.returncode == 0 and "--dtype" in helped.stdout
