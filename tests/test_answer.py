"""Answering from Python and the shell, with one or several adapters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DEMO, compose
from yochameleon.concept.adapter import save_adapter
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.errors import YoChameleonError
from yochameleon.inference import PersonalizedModel
from yochameleon.training.recipe import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("run")
    train(compose(["+concept=demo", "logger=none", "trainer.max_steps=4", "trainer.eval_every=4"], cache_dir), run_dir)
    return run_dir / "adapter"


def test_recognize_and_answer_from_python(trained, cache_dir):
    pm = PersonalizedModel.load([trained], cache_dir=cache_dir)
    photo = sorted((DEMO / "corgi" / "test").glob("*.jpg"))[0]
    verdict = pm.recognize(photo)
    assert verdict.concept == "corgi" and verdict.answer in ("Yes", "No") and 0.0 <= verdict.probability <= 1.0
    from PIL import Image

    assert pm.recognize(Image.open(photo)).probability == pytest.approx(verdict.probability, abs=1e-5)
    text = pm.answer("Describe <corgi>.", max_new_tokens=8)
    assert isinstance(text, str)
    assert pm.answer("Describe <corgi>.", max_new_tokens=8) == text  # greedy is deterministic
    pm.answer("What is <corgi> doing here?", image=photo, max_new_tokens=4)
    with pytest.raises(YoChameleonError, match="loaded: <corgi>"):
        pm.recognize(photo, concept="mam")


def test_generated_text_never_contains_image_tokens(trained, cache_dir):
    pm = PersonalizedModel.load([trained], cache_dir=cache_dir)
    backbone = pm.backbone
    # Make image tokens the model's favourite continuation; the sampler must still avoid them.
    with torch.no_grad():
        pm.concepts["corgi"].output_rows.zero_()
    builder = pm.builder("corgi")
    from yochameleon.model.decoding import left_pad

    ids, mask = left_pad([builder.prompt_ids("Describe <corgi>.")], backbone.tokenizer.pad_token_id)
    lm = backbone.model.lm_head.weight
    saved = lm.data[backbone.image_map.image_token_ids].clone()
    lm.data[backbone.image_map.image_token_ids] = lm.data.abs().max() * 50 * torch.randn_like(saved).sign()
    try:
        out = pm.model.generate_text(ids, mask, 12, backbone.text_banned_ids(), backbone.text_stop_ids())[0]
    finally:
        lm.data[backbone.image_map.image_token_ids] = saved
    assert out and not any(backbone.image_map.is_image_token[t] for t in out)


def test_two_concepts_in_one_prompt(trained, tmp_path, cache_dir):
    pm = PersonalizedModel.load([trained], cache_dir=cache_dir)
    other = PersonalizedTokens.from_backbone(pm.backbone.model, pm.backbone.config.vocabulary_map, "mam", 16, 16)
    save_adapter(tmp_path / "mam", other, pm.backbone.fingerprint(), {"self_prompting": True})
    both = PersonalizedModel.load([trained, tmp_path / "mam"], cache_dir=cache_dir)
    ids = [set(c.token_ids.tolist()) for c in both.concepts.values()]
    assert ids[0].isdisjoint(ids[1])  # same reserved ids on disk, remapped on load
    prompt = both.builder("corgi").prompt_ids("Are <corgi> and <mam> friends?")
    assert int(both.concepts["mam"].token_ids[0]) in prompt and int(both.concepts["corgi"].token_ids[0]) in prompt


def test_answer_cli(trained, cache_dir):
    photo = sorted((DEMO / "corgi" / "test").glob("*.jpg"))[0]
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir)}
    result = subprocess.run([sys.executable, "-m", "yochameleon.answer", "--adapter", str(trained),
                             "--image", str(photo)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Is <corgi> in this photo?" in result.stdout and "P(Yes)" in result.stdout
    result = subprocess.run([sys.executable, "-m", "yochameleon.answer", "--adapter", str(trained), "--question",
                             "Describe <corgi>.", "--max-new-tokens", "4", "--json"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and '"answer"' in result.stdout
    bad = subprocess.run([sys.executable, "-m", "yochameleon.answer", "--adapter", str(trained.parent)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0


@pytest.fixture(scope="module")
def untrained(backbone, tmp_path_factory):
    """An adapter of <corgi> on the tiny Chameleon, as saved by training (rows untrained: enough to load)."""
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "corgi", 2, 2)
    directory = tmp_path_factory.mktemp("untrained") / "adapter"
    save_adapter(directory, tokens, backbone.fingerprint() | {"path": str(backbone.path), "model_config": "tiny",
                                                              "source": "tiny"}, {"self_prompting": True})
    return directory


def _cli(module: str, args: list[str], cache_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("module,args", [("yochameleon.answer", ["--question", "Describe <rex>."]),
                                         ("yochameleon.generate", ["--prompt", "A photo of <rex>."])])
def test_answer_and_generate_refuse_an_unknown_concept_before_loading(module, args, untrained, tmp_path, cache_dir):
    # Issue 25.2: `answer --question "Describe <rex>."` answered with garbage and exited 0; generate refused it.
    # --model-path points nowhere: had the backbone been loaded first, that would be the error.
    result = _cli(module, ["--adapter", str(untrained), "--model-path", str(tmp_path / "nowhere"), *args,
                           "--out" if module.endswith("generate") else "--json", *([str(tmp_path)] if
                           module.endswith("generate") else [])], cache_dir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: unknown concept <rex> in {args[1]!r}; loaded: <corgi> (fix the name, or add its --adapter)")


def test_python_answer_refuses_an_unknown_concept(untrained, cache_dir):
    pm = PersonalizedModel.load([untrained], cache_dir=cache_dir)
    with pytest.raises(YoChameleonError, match=r"unknown concept <rex> in 'Describe <rex>.'; loaded: <corgi>"):
        pm.answer("Describe <rex>.", max_new_tokens=2)


def test_load_reads_each_adapter_config_once(untrained, tmp_path, cache_dir, monkeypatch):
    """issue 26 item 3: the adapter's JSON is read and checked once, then the config object is passed down."""
    import shutil

    import yochameleon.concept.adapter as adapter
    import yochameleon.inference as inference

    second = tmp_path / "second"
    shutil.copytree(untrained, second)
    (second / "adapter_config.json").write_text((untrained / "adapter_config.json").read_text().replace(
        '"corgi"', '"rex"'))
    reads, real = [], adapter.read_adapter_config

    def counting(directory):
        reads.append(Path(directory))
        return real(directory)

    monkeypatch.setattr(adapter, "read_adapter_config", counting)
    monkeypatch.setattr(inference, "read_adapter_config", counting)
    pm = PersonalizedModel.load([untrained, second], cache_dir=cache_dir)
    assert reads == [untrained, second] and sorted(pm.concepts) == ["corgi", "rex"]


def test_a_backbone_mismatch_names_both_backbones_and_the_flag_before_loading(untrained, tmp_path, cache_dir,
                                                                              monkeypatch):
    # Issue 25.7: the loaded backbone was named after the adapter's record ('janus-tiny' for a tiny Chameleon),
    # the advice was Hydra syntax `answer` does not take, and it came after the model had loaded.
    import json
    import shutil

    janus = tmp_path / "janus-adapter"
    shutil.copytree(untrained, janus)
    config = json.loads((janus / "adapter_config.json").read_text())
    config["base_model"] |= {"name": "janus-tiny", "family": "janus", "hidden_size": 48, "source": "janus-tiny"}
    (janus / "adapter_config.json").write_text(json.dumps(config))
    tiny_dir = PersonalizedModel.load([untrained], cache_dir=cache_dir).backbone.path

    import yochameleon.inference as inference

    monkeypatch.setattr(inference, "load_backbone", lambda *a, **k: pytest.fail("loaded the backbone first"))
    with pytest.raises(YoChameleonError) as refused:
        PersonalizedModel.load([janus], model_path=tiny_dir, cache_dir=cache_dir)
    hidden = json.loads((untrained / "adapter_config.json").read_text())["base_model"]["hidden_size"]
    assert str(refused.value) == (
        f"adapter {janus} was trained on backbone 'janus-tiny' (hidden_size=48), but {Path(tiny_dir).name!r} has "
        f"hidden_size={hidden}. Load it with the backbone it was trained on: --model-path <dir> (Python: "
        "model_path=), or leave the model path out to use the adapter's recorded one")
