"""Every recipe composes, differs from the default only where it should, and trains."""

from __future__ import annotations

import pytest

from conftest import compose
from yochameleon.training.recipe import train

# Both backbone families train every recipe; the Janus runs are in the slow suite (the fast one is at its budget).
MODELS = ["tiny", pytest.param("janus-tiny", marks=pytest.mark.slow)]
RECIPES = ["yochameleon", "shared-tokens", "understanding-only", "generation-only", "no-soft-positive",
           "no-self-prompting", "self-prompting", "paper-layout"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes(name, cache_dir):
    cfg = compose(["+concept=demo", f"recipe={name}"], cache_dir)
    r = cfg.recipe
    assert r.name == name and cfg.run_name == name and name in cfg.logger.tags
    expected = {
        "yochameleon": (16, 16, False, True, False),
        "shared-tokens": (16, 16, False, True, True),
        "understanding-only": (0, 16, False, False, False),
        "generation-only": (16, 0, False, True, False),
        "no-soft-positive": (16, 16, False, False, False),
        "no-self-prompting": (16, 16, False, True, False),  # the default since 2026-12-06, kept by name
        "self-prompting": (16, 16, True, True, False),
        "paper-layout": (16, 16, True, True, False),
    }[name]
    assert (r.k_g, r.k_u, r.self_prompting, r.soft_positives.enabled, r.shared_tokens) == expected
    # The paper's image layout (the whole g-token group before begin-of-image, mirrored targets) is its own recipe.
    assert (r.generation_group, r.flip_generation) == (("full", True) if name == "paper-layout" else ("none", False))
    assert r.tasks.generation == (name != "understanding-only")
    assert r.tasks.recognition == (name != "generation-only")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ["understanding-only", "generation-only", "shared-tokens", "self-prompting"])
def test_recipe_trains_and_reports_both_self_prompt_modes(name, model, tmp_path, cache_dir):
    summary = train(compose(["+concept=demo", f"recipe={name}", f"model={model}", "logger=none", "trainer.max_steps=2",
                             "trainer.eval_every=2", "trainer.sample_images=false"], cache_dir), tmp_path / name)
    final = summary["final"]
    assert "eval/recognition/weighted" in final
    has_group = name == "self-prompting"  # the only one of these with a group before text (the default has none)
    assert ("eval/recognition_emitted/weighted" in final) == has_group


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_sweep_launchers_compose(launcher, cache_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from yochameleon.config import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["+concept=demo", f"hydra/launcher={launcher}"],
                            return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert ("SlurmLauncher" in target) if launcher == "slurm" else ("BasicLauncher" in target)
    assert cfg.hydra.sweep.subdir == "corgi/yochameleon"  # one directory per concept and recipe


@pytest.mark.parametrize("setting", ["recipe.generation_group=full", "recipe.inference.self_prompt=emitted"])
def test_a_self_prompt_setting_without_self_prompting_is_refused_before_any_work(setting, tmp_path, cache_dir):
    """The default recipe self-prompts nowhere: a setting that only acts under self-prompting is an error naming
    the fix, raised before the run directory or the backbone exists, not a silently ignored override."""
    from yochameleon.errors import YoChameleonError

    with pytest.raises(YoChameleonError, match="recipe.self_prompting=true"):
        train(compose(["+concept=demo", "logger=none", setting], cache_dir), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    summary = train(compose(["+concept=demo", "logger=none", setting, "recipe.self_prompting=true",
                             "trainer.max_steps=1", "trainer.eval_every=1", "trainer.sample_images=false"], cache_dir),
                    tmp_path / "on")
    assert summary["steps"] == 1 and "eval/recognition_emitted/weighted" in summary["final"]
