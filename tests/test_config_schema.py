"""Configs are checked at compose time: every shipped file fits the schema, a mistake is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import compose
from yochameleon.config import CONFIG_DIR
from yochameleon.schema import ConceptConfig, ModelConfig, RecipeConfig, TrainerConfig


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _cli(args: list[str], cwd, cache_dir, module: str = "yochameleon.train") -> subprocess.CompletedProcess:
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("concept", _names("concept"))
def test_every_shipped_concept_composes_into_the_schema(concept, cache_dir):
    cfg = compose([f"+concept={concept}", "logger=none"], cache_dir)
    assert OmegaConf.get_type(cfg.concept) is ConceptConfig and cfg.concept.name
    assert OmegaConf.get_type(cfg.trainer) is TrainerConfig
    assert isinstance(cfg.trainer.batch_size, int) and isinstance(cfg.recipe.self_prompting, bool)


@pytest.mark.parametrize("recipe", _names("recipe"))
@pytest.mark.parametrize("model", _names("model"))
def test_every_recipe_and_model_compose_with_no_missing_value(recipe, model, cache_dir):
    cfg = compose(["+concept=demo", f"recipe={recipe}", f"model={model}", "model.path=/models/x"], cache_dir)
    assert OmegaConf.get_type(cfg.recipe) is RecipeConfig and OmegaConf.get_type(cfg.model) is ModelConfig
    assert cfg.recipe.name == recipe
    missing = [k for k in ("model", "recipe", "trainer", "logger", "retrieval")
               if OmegaConf.missing_keys(cfg[k])]
    assert not missing, f"{missing} have ??? values after composing recipe={recipe} model={model}"


def test_a_misspelt_override_is_refused_naming_the_key(cache_dir):
    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose(["+concept=demo", "trainer.max_stepz=3"], cache_dir)


def test_a_value_of_the_wrong_type_is_refused_naming_the_key(cache_dir):
    with pytest.raises(ConfigCompositionException, match="batch_size=four") as refused:
        compose(["+concept=demo", "trainer.batch_size=four"], cache_dir)
    assert "could not be converted to Integer" in str(refused.value.__cause__)


def test_an_unknown_key_in_a_users_concept_file_names_the_key_and_the_file(tmp_path, cache_dir):
    mine = tmp_path / "conf" / "concept" / "my-dog.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("name: dog\nphotoss: photos/dog\nnegatives: [photos/others]\n")
    result = _cli(["+concept=my-dog", "logger=none"], tmp_path, cache_dir)
    assert result.returncode == 1
    assert "photoss" in result.stderr and "concept/my-dog" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # nothing ran, nothing was written


def test_the_evaluation_config_is_checked_too(tmp_path, cache_dir):
    result = _cli(["+concept=demo", "batch_sise=4", "logger=none"], tmp_path, cache_dir, module="evaluation.run")
    assert result.returncode == 1 and "batch_sise" in result.stderr and "Traceback" not in result.stderr
