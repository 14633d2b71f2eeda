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


def test_the_evaluation_config_is_checked_too(tmp_path, cache_dir):
    result = _cli(["+concept=demo", "batch_sise=4", "logger=none"], tmp_path, cache_dir, module="evaluation.run")
    assert result.returncode == 1 and "batch_sise" in result.stderr and "Traceback" not in result.stderr


def _eval_compose(overrides: list[str], cache_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from yochameleon.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("eval", overrides=[f"cache_dir={cache_dir}", *overrides])


@pytest.mark.parametrize("plus", ["", "+"])
def test_a_misspelt_key_is_refused_with_or_without_plus_in_one_line(plus, tmp_path, cache_dir):
    # Issue 25.1: `+trainer.max_step=20` used to train all the default steps with max_step: 20 in config.yaml.
    result = _cli(["+concept=demo", "logger=none", f"{plus}trainer.max_step=20"], tmp_path, cache_dir)
    assert result.returncode == 1 and not (tmp_path / "outputs").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unknown key trainer.max_step (on the command line: ")
    assert "nearest to it: max_steps" in lines[0] and "To append" not in lines[0]


def test_a_misspelt_key_in_a_users_concept_file_is_one_line_naming_the_file(tmp_path, cache_dir):
    mine = tmp_path / "conf" / "concept" / "my-dog.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("name: dog\nphotoss: photos/dog\nnegatives: [photos/others]\n")
    result = _cli(["+concept=my-dog", "logger=none"], tmp_path, cache_dir)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: unknown key concept.photoss (in {mine}); concept's keys nearest to it: "
                                     "photos, val_photos, test_photos. Every key and its type: yochameleon/schema.py")
    assert not (tmp_path / "outputs").exists()  # nothing ran, nothing was written


CLOSED_CHOICES = [  # issue 24.1: (config, key, a wrong value, the choices the message lists)
    ("train", "trainer.select_best_by", "eval/recognition/weighed", "eval/recognition/weighted, eval/recognition/auroc"),
    ("train", "recipe.self_prompt_loss", "tokens", "group, token"),
    ("train", "recipe.inference.self_prompt", "forcd", "forced, emitted"),
    ("train", "trainer.precision", "fp16", "auto, bf16, no"),
    ("train", "trainer.optimizer", "sgd", "adamw"),
    ("train", "trainer.lr_schedule", "linear", "constant, warmup_cosine"),
    ("train", "model.source", "hub", "local, tiny, toyworld, janus-tiny"),
    ("eval", "methods", "[adapter,plan]", "adapter, encoder, plain, description, reference_photos"),
    ("eval", "tasks", "[recognition,textqa]", "recognition, vqa, text_qa, multi_concept, generation, forgetting"),
]


@pytest.mark.parametrize("config,key,value,choices", CLOSED_CHOICES, ids=[c[1] for c in CLOSED_CHOICES])
def test_a_closed_choice_refuses_a_wrong_value_at_compose_time(config, key, value, choices, cache_dir):
    overrides = ["+concept=demo", f"{key}={value}"]
    with pytest.raises(ConfigCompositionException) as refused:
        compose(overrides, cache_dir) if config == "train" else _eval_compose(overrides, cache_dir)
    assert f"expected one of [{choices}" in str(refused.value.__cause__)
    assert str(refused.value.__cause__.full_key).startswith(key)


def test_a_wrong_choice_on_the_command_line_is_one_line_naming_the_key_and_choices(tmp_path, cache_dir):
    result = _cli(["+concept=demo", "logger=none", "trainer.select_best_by=eval/recognition/weighed"], tmp_path,
                  cache_dir)
    assert result.returncode == 1 and not (tmp_path / "outputs").exists()
    assert result.stderr.strip() == (
        "error: trainer.select_best_by: Invalid value 'eval/recognition/weighed', expected one of "
        "[eval/recognition/weighted, eval/recognition/auroc, eval/recognition/positive, eval/recognition/negative] "
        "(on the command line: trainer.select_best_by=eval/recognition/weighed)")


def test_closed_choices_read_as_their_strings(cache_dir):
    cfg = compose(["+concept=demo", "trainer.precision=bf16"], cache_dir)
    assert cfg.trainer.precision == "bf16" and str(cfg.trainer.precision) == "bf16"
    assert f"{cfg.recipe.inference.self_prompt}" == "forced" and {"group": 1}[cfg.recipe.self_prompt_loss] == 1
    assert "precision: bf16" in OmegaConf.to_yaml(cfg.trainer)


def test_paths_are_typed_as_paths(cache_dir):
    from pathlib import Path

    cfg = _eval_compose(["+concept=demo", "adapter=runs/x/adapter", "model.path=/models/x"], cache_dir)
    assert isinstance(cfg.adapter, Path) and isinstance(cfg.model.path, Path) and isinstance(cfg.eval_set.dir, Path)


@pytest.mark.parametrize("concept", _names("concept"))
def test_every_shipped_concept_composes_under_the_evaluation_config(concept, cache_dir):
    # Issue 24.0: +concept=toy-bo stopped at compose time with "Key 'retrieval' not in 'EvalConfig'".
    cfg = _eval_compose([f"+concept={concept}", "logger=none"], cache_dir)
    assert OmegaConf.get_type(cfg.concept) is ConceptConfig and cfg.concept.name
