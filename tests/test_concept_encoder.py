"""The concept encoder (issue 27): photos -> a concept's rows, saved, loaded, refused, added to a loaded model,
and trained across concept folders by `python -m yochameleon.train_encoder` (tiny backbone, a few steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import DEMO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def encoder_setup(backbone):
    from yochameleon.concept.encoder import encoder_config_for, new_encoder

    torch.manual_seed(0)
    config = encoder_config_for(backbone, 4, 3, backbone.default_first_token, width=32, layers=1, heads=2,
                                max_photos=3, recipe={"self_prompting": True, "generation_group": "none",
                                                      "inference": {"self_prompt": "forced"}})
    return config, new_encoder(backbone, config)


def _randomize(encoder):
    """A copy of `encoder` whose output heads are no longer zero (the module fixture stays untrained)."""
    import copy

    encoder = copy.deepcopy(encoder)
    with torch.no_grad():
        for head in (encoder.to_input, encoder.to_output):
            head.weight.normal_(0, 0.05)
    return encoder


def test_an_untrained_encoder_gives_the_reserved_rows_a_fresh_adapter_starts_from(backbone, encoder_setup, tokens):
    config, encoder = encoder_setup
    features = torch.randn(2, 3, config.feature_tokens, config.feature_dim)
    inputs, outputs = encoder(features)
    assert inputs.shape == outputs.shape == (2, 1 + 4 + 3, backbone.hidden_size)
    assert torch.equal(inputs[0], tokens.input_rows.detach()) and torch.equal(outputs[1], tokens.output_rows.detach())


def test_rows_do_not_depend_on_the_photos_order_nor_on_padded_photos(encoder_setup):
    config, encoder = encoder_setup
    trained = _randomize(encoder)
    a, b = torch.randn(config.feature_tokens, config.feature_dim), torch.randn(config.feature_tokens, config.feature_dim)
    rows_ab, _ = trained(torch.stack([a, b])[None])
    rows_ba, _ = trained(torch.stack([b, a])[None])
    assert torch.allclose(rows_ab, rows_ba, atol=1e-5)
    padded, _ = trained(torch.stack([a, b, torch.randn_like(a) * 9])[None], torch.tensor([[True, True, False]]))
    assert torch.allclose(padded, rows_ab, atol=1e-5)
    assert not torch.allclose(trained(a[None, None])[0], rows_ab, atol=1e-3)  # the photos do matter


def test_encoding_photos_gives_a_concept_that_saves_and_loads_as_an_adapter(backbone, encoder_setup, tmp_path,
                                                                            demo_photos):
    from yochameleon.concept.adapter import load_adapter, save_adapter
    from yochameleon.concept.encoder import ZeroShot
    from yochameleon.data.images import load_image

    config, encoder = encoder_setup
    zero_shot = ZeroShot(_randomize(encoder), backbone)
    photos = [load_image(p) for p in demo_photos[:2]]
    tokens = zero_shot.encode("bo", photos)
    assert tokens.token_ids.tolist() == list(config.token_ids) and tokens.generation_group == "none"
    assert tokens.encoded_seconds < 5
    again = zero_shot.encode("bo", list(reversed(photos)))
    assert torch.allclose(again.input_rows, tokens.input_rows, atol=1e-5)  # the photos' order does not matter
    other = zero_shot.encode("bo", photos[:1])
    assert not torch.allclose(other.input_rows, tokens.input_rows)
    save_adapter(tmp_path / "bo", tokens, backbone.fingerprint(), {"recipe": config.recipe})
    loaded = load_adapter(tmp_path / "bo", backbone)
    assert torch.equal(loaded.input_rows, tokens.input_rows) and torch.equal(loaded.output_rows, tokens.output_rows)
    from yochameleon.concept.encoder import EncoderError

    with pytest.raises(EncoderError, match="no photos"):
        zero_shot.encode("bo", [])
    with pytest.raises(EncoderError, match="at most 3"):
        zero_shot.encode("bo", photos * 2)


def test_an_encoder_saves_loads_and_is_refused_on_another_backbone_or_damaged(backbone, janus_backbone,
                                                                             encoder_setup, tmp_path):
    from yochameleon.concept.encoder import (ENCODER_CONFIG, ENCODER_WEIGHTS, EncoderError, load_encoder,
                                             save_encoder)
    from yochameleon.errors import YoChameleonError

    config, encoder = encoder_setup
    save_encoder(tmp_path / "enc", encoder, backbone.fingerprint())
    loaded = load_encoder(tmp_path / "enc", backbone)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), encoder.state_dict().values()))
    assert loaded.config == config
    with pytest.raises(YoChameleonError, match="trained on backbone 'tiny'.*janus-tiny"):
        load_encoder(tmp_path / "enc", janus_backbone)
    with pytest.raises(EncoderError, match="not a concept encoder"):
        load_encoder(tmp_path, backbone)
    shutil.copytree(tmp_path / "enc", tmp_path / "bad")
    raw = json.loads((tmp_path / "bad" / ENCODER_CONFIG).read_text())
    (tmp_path / "bad" / ENCODER_CONFIG).write_text(json.dumps(raw | {"width": 64}))
    with pytest.raises(EncoderError, match=f"{ENCODER_WEIGHTS} does not match"):
        load_encoder(tmp_path / "bad", backbone)
    (tmp_path / "bad" / ENCODER_CONFIG).write_text(json.dumps({k: v for k, v in raw.items() if k != "k_g"}))
    with pytest.raises(EncoderError, match="field 'k_g' is missing"):
        load_encoder(tmp_path / "bad", backbone)


def _concept_tree(root: Path) -> Path:
    """Six concept folders from the demo photos: corgi (5 photos) and five other subjects (2 each)."""
    (root / "corgi").mkdir(parents=True)
    for photo in sorted((DEMO / "corgi").rglob("*.jpg")):
        shutil.copy(photo, root / "corgi" / f"{photo.parent.name}_{photo.name}")
    for subject in ("dog2", "duck_toy", "cat", "clock", "bear_plushie"):
        (root / subject).mkdir()
        for photo in sorted((DEMO / "negatives").rglob(f"{subject}_0*.jpg")):
            shutil.copy(photo, root / subject / photo.name)
    return root


def test_concept_folders_are_split_and_bad_ones_refused(tmp_path):
    from yochameleon.data.concept_folders import read_concept_folders
    from yochameleon.errors import ConceptDataError

    root = _concept_tree(tmp_path / "concepts")
    splits = read_concept_folders(root, ["cat"], ["clock"])
    assert [f.name for f in splits["val"]] == ["cat"] and [f.name for f in splits["test"]] == ["clock"]
    assert sorted(f.name for f in splits["train"]) == ["bear_plushie", "corgi", "dog2", "duck_toy"]
    (root / "splits.json").write_text(json.dumps({"val": ["dog2"], "test": ["cat"]}))
    assert [f.name for f in read_concept_folders(root)["val"]] == ["dog2"]
    with pytest.raises(ConceptDataError, match="both the val and the test split"):
        read_concept_folders(root, ["cat"], ["cat"])
    with pytest.raises(ConceptDataError, match="'rex'.*not folders"):
        read_concept_folders(root, ["rex"], [])
    (root / "lonely").mkdir()
    shutil.copy(next((root / "cat").iterdir()), root / "lonely" / "only.jpg")
    with pytest.raises(ConceptDataError, match="lonely holds 1 photo"):
        read_concept_folders(root, [], [])


def test_a_folders_qa_json_is_its_text_qa_target_and_the_backbone_is_asked_about_the_others(tmp_path, backbone):
    """qa.json (question naming <sks>, answer) is read with the folder and is the concept's text QA target; folders
    without one are asked about (the backbone's answers); data.folder_qa=false asks about every folder; a bad
    qa.json is refused naming the file and the entry."""
    from types import SimpleNamespace

    from yochameleon.data.concept_folders import read_concept_folders
    from yochameleon.errors import ConceptDataError
    from yochameleon.training.encoder_recipe import concept_qa

    root = _concept_tree(tmp_path / "concepts")
    own = [{"question": "What colour is <sks>?", "answer": "orange."}]
    (root / "cat" / "qa.json").write_text(json.dumps(own))
    train = read_concept_folders(root, [], [])["train"]
    assert next(f for f in train if f.name == "cat").qa == own
    data = SimpleNamespace(class_noun="dog", category="object", qa_photos=1, folder_qa=True)
    two = [f for f in train if f.name in ("cat", "clock")]
    qa = concept_qa(backbone, two, tmp_path / "cache", data, progress=False)
    assert qa["cat"] == own and qa["clock"] and qa["clock"] != own  # the clock's: the backbone's own answers
    asked = concept_qa(backbone, two, tmp_path / "cache", SimpleNamespace(**{**vars(data), "folder_qa": False}),
                       progress=False)
    assert asked["cat"] != own and len(asked["cat"]) == len(asked["clock"])
    for bad, says in (([{"question": "What colour is it?", "answer": "red."}], "entry 0.*does not name <sks>"),
                      ([{"question": "What colour is <sks>?"}], "entry 0 is"), ({}, "must be a list")):
        (root / "cat" / "qa.json").write_text(json.dumps(bad))
        with pytest.raises(ConceptDataError, match=f"cat/qa.json.*{says}"):
            read_concept_folders(root, [], [])


def test_add_concept_to_a_loaded_model_between_two_questions(backbone, tiny_path, encoder_setup, tmp_path,
                                                             demo_photos):
    from yochameleon.concept.encoder import save_encoder
    from yochameleon.errors import YoChameleonError
    from yochameleon.inference import PersonalizedModel

    config, encoder = encoder_setup
    save_encoder(tmp_path / "enc", _randomize(encoder), backbone.fingerprint() | {"path": str(tiny_path),
                                                                                  "source": "local"})
    pm = PersonalizedModel.load(encoder=tmp_path / "enc", device="cpu")
    plain = pm.answer("What is in the picture?", max_new_tokens=4)
    pm.add_concept("bo", [str(p) for p in demo_photos[:2]])
    assert pm.answer("What is in the picture?", max_new_tokens=4) == plain  # a prompt naming no concept: unchanged
    assert pm.concepts["bo"].token_ids[0].item() in pm.answer_prompt_ids("Describe <bo>.")
    assert 0.0 <= pm.recognize(demo_photos[2], concept="bo").probability <= 1.0
    pm.add_concept("mam", str(DEMO / "corgi" / "train"), encoder=tmp_path / "enc")  # a folder: its photos
    assert not set(pm.concepts["mam"].token_ids.tolist()) & set(pm.concepts["bo"].token_ids.tolist())
    before = dict(pm.concepts)
    for bad, match in ((lambda: pm.add_concept("bo", demo_photos[:1]), "already loaded"),
                       (lambda: pm.add_concept("rex", []), "no photos"),
                       (lambda: pm.add_concept("rex", [tmp_path / "missing.jpg"]), "missing.jpg"),
                       (lambda: pm.add_concept("re x", demo_photos[:1]), "not allowed")):
        with pytest.raises(YoChameleonError, match=match):
            bad()
    assert pm.concepts == before


def test_train_encoder_end_to_end_on_concept_folders_then_answer_with_it(tmp_path, cache_dir, tiny_path, capsys):
    from hydra import compose, initialize_config_dir

    from yochameleon import answer
    from yochameleon.config import CONFIG_DIR, register_resolvers
    from yochameleon.training.encoder_recipe import EncoderRunError, train_encoder

    root = _concept_tree(tmp_path / "concepts")
    register_resolvers()
    overrides = [f"cache_dir={cache_dir}", "model=tiny", f"data.root={root}", "data.val_concepts=[cat,dog2]",
                 "data.test_concepts=[clock,bear_plushie]", "trainer.steps=4", "trainer.eval_every=2",
                 "trainer.checkpoint_every=2", "trainer.concepts_per_step=2", "encoder.width=32", "encoder.k_g=4",
                 "encoder.k_u=3", "encoder.layers=1", "encoder.heads=2", "logger=none", "trainer.progress=false"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_encoder", overrides=overrides)
    run = tmp_path / "run"
    summary = train_encoder(cfg, run)
    assert summary["concepts"] == {"train": 2, "val": 2, "test": 2}
    assert summary["best"]["step"] in (2, 4) and (run / "best" / "encoder.safetensors").exists()
    assert set(summary["test"]) == {"1_photos", "5_photos"}
    assert summary["test"]["5_photos"]["concepts"] == 2 and summary["test"]["1_photos"]["prompt_tokens"] > 8
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/auroc" in r] == [2, 4]
    with pytest.raises(EncoderRunError, match="already holds an encoder run"):
        train_encoder(cfg, run)
    assert answer.main(["--encoder", str(run / "best"), "--concept", f"corgi={DEMO / 'corgi' / 'train'}",
                        "--image", str(DEMO / "corgi" / "test" / "03.jpg"), "--device", "cpu"]) == 0
    assert "Is <corgi> in this photo?" in capsys.readouterr().out
    # The harness's `encoder` method: the demo concept encoded from its training photos, scored like the others.
    from evaluation.run import evaluate

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        eval_cfg = compose("eval", overrides=["+concept=demo", f"cache_dir={cache_dir}", f"encoder={run / 'best'}",
                                              "methods=[encoder,reference_photos]", "tasks=[recognition]",
                                              "recognition.free_answer=false", "logger=none", "device=cpu"])
    metrics = evaluate(eval_cfg, tmp_path / "eval")
    assert set(metrics["methods"]) == {"encoder", "reference_photos"}
    assert metrics["methods"]["encoder"]["recognition"]["n_positive"] > 0
    # recipe.init=encoder: a training run whose rows start as the encoder makes them from the concept's photos.
    from conftest import compose as compose_train
    from yochameleon.training.recipe import train

    trained = train(compose_train(["+concept=demo", "logger=none", "recipe.k_g=4", "recipe.k_u=3",
                                   "recipe.init=encoder", f"recipe.encoder={run / 'best'}", "trainer.max_steps=1",
                                   "trainer.sample_images=false"], cache_dir), tmp_path / "init")
    assert trained["steps"] == 1
    record = json.loads((tmp_path / "init" / "adapter" / "adapter_config.json").read_text())["init"]
    assert record["kind"] == "encoder" and record["photos"] == 3
    # ... at trainer.lr x recipe.encoder_lr_scale (its default), the default start at trainer.lr itself.
    defaults = compose_train(["+concept=demo"], cache_dir)
    first = json.loads((tmp_path / "init" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train/lr"] == pytest.approx(float(defaults.trainer.lr) * float(defaults.recipe.encoder_lr_scale))
    assert float(defaults.recipe.encoder_lr_scale) < 1
    with pytest.raises(Exception, match="k_g=4, k_u=3 separate tokens"):
        train(compose_train(["+concept=demo", "logger=none", "recipe.init=encoder", f"recipe.encoder={run / 'best'}",
                             "trainer.max_steps=1"], cache_dir), tmp_path / "init2")


def _encoder_cfg(cache_dir, root, *extra):
    from hydra import compose, initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    overrides = [f"cache_dir={cache_dir}", "model=tiny", f"data.root={root}", "data.val_concepts=[cat,dog2]",
                 "data.test_concepts=[clock,bear_plushie]", "trainer.concepts_per_step=2", "encoder.width=32",
                 "encoder.k_g=4", "encoder.k_u=3", "encoder.layers=1", "encoder.heads=2", "logger=none",
                 "trainer.progress=false", "trainer.eval_every=0", *extra]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train_encoder", overrides=overrides)


@pytest.mark.slow  # an end-to-end run (39 s): the fast suite read 540 s of its 600 on 2026-12-05
def test_an_interrupted_encoder_run_resumes_exactly(tmp_path, cache_dir, tiny_path):
    from safetensors.torch import load_file

    from yochameleon.training.encoder_recipe import EncoderTrainer, train_encoder

    root = _concept_tree(tmp_path / "concepts")
    cfg = _encoder_cfg(cache_dir, root, "trainer.steps=4", "trainer.checkpoint_every=2")
    train_encoder(cfg, tmp_path / "straight")
    stopped = EncoderTrainer(cfg, tmp_path / "resumed")
    stopped.setup()
    step = stopped.train_step

    def stop_at_two(index):
        if index == 2:
            raise KeyboardInterrupt
        return step(index)

    stopped.train_step = stop_at_two
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    train_encoder(_encoder_cfg(cache_dir, root, "trainer.steps=4", "trainer.checkpoint_every=2",
                               "trainer.resume=true"), tmp_path / "resumed")
    a, b = (load_file(str(tmp_path / run / "encoder" / "encoder.safetensors")) for run in ("straight", "resumed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.equal(a["to_input.weight"], torch.zeros_like(a["to_input.weight"]))  # it did learn
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in line]
    assert len(losses) == 4


@pytest.mark.slow
def test_train_encoder_on_two_processes_matches_one_process(tmp_path, cache_dir, tiny_path):
    import os
    import subprocess
    import sys

    root = _concept_tree(tmp_path / "concepts")
    args = ["model=tiny", f"data.root={root}", "data.val_concepts=[cat,dog2]", "data.test_concepts=[clock,bear_plushie]",
            "trainer.concepts_per_step=2", "encoder.width=32", "encoder.k_g=4", "encoder.k_u=3", "encoder.layers=1",
            "encoder.heads=2", "logger=none", "trainer.progress=false", "trainer.steps=3", "trainer.eval_every=3",
            "trainer.device=cpu", f"output_root={tmp_path}"]
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    for command, name in (([sys.executable], "one"), ([torchrun, "--nproc_per_node", "2"], "two")):
        done = subprocess.run([*command, "-m", "yochameleon.train_encoder", *args, f"run_name={name}"],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("done: 3 steps") == 1
    from safetensors.torch import load_file

    one, two = (load_file(str(tmp_path / "encoders" / n / "encoder" / "encoder.safetensors")) for n in ("one", "two"))
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one), max(
        float((one[k] - two[k]).abs().max()) for k in one)


def test_train_encoder_refuses_a_misspelt_key_or_a_wrong_choice_in_one_line():
    from yochameleon.config import ConfigError, check_command_line
    from yochameleon.schema import EncoderTrainConfig

    with pytest.raises(ConfigError, match="trainer.step\\b.*steps") as refused:
        check_command_line("train_encoder", EncoderTrainConfig, ["+trainer.step=3"])
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="clip.*backbone"):
        check_command_line("train_encoder", EncoderTrainConfig, ["encoder.feature_source=clip"])


def test_train_encoder_and_add_concept_on_the_janus_family(tmp_path, cache_dir, janus_path):
    """The same recipe on tiny Janus: features from its SigLIP + aligner slots through the language model."""
    from yochameleon.inference import PersonalizedModel
    from yochameleon.training.encoder_recipe import train_encoder

    root = _concept_tree(tmp_path / "concepts")
    summary = train_encoder(_encoder_cfg(cache_dir, root, "model=janus-tiny", "trainer.steps=2",
                                         "trainer.eval_every=2", "trainer.checkpoint_every=2"), tmp_path / "run")
    assert summary["best"]["step"] == 2 and summary["test"]["5_photos"]["concepts"] == 2
    pm = PersonalizedModel.load(encoder=tmp_path / "run" / "best", device="cpu")
    pm.add_concept("corgi", DEMO / "corgi" / "train")
    assert 0.0 <= pm.recognize(DEMO / "corgi" / "test" / "03.jpg", concept="corgi").probability <= 1.0


def test_the_backbones_text_qa_is_cached_on_the_photos_content_and_the_questions(tmp_path, backbone):
    from types import SimpleNamespace

    from yochameleon.data.concept_folders import read_concept_folders
    from yochameleon.training.encoder_recipe import concept_qa

    root = _concept_tree(tmp_path / "concepts")
    train = read_concept_folders(root, [], [])["train"][:2]
    data = SimpleNamespace(class_noun="dog", category="object", qa_photos=1)
    cached = lambda: sorted((tmp_path / "cache" / "encoder_qa").glob("*.json"))  # noqa: E731
    first = concept_qa(backbone, train, tmp_path / "cache", data, progress=False)
    assert set(first) == {f.name for f in train} and len(cached()) == 1
    assert concept_qa(backbone, train, tmp_path / "cache", data, progress=False) == first and len(cached()) == 1
    shutil.copy(train[1].photos[0], train[0].photos[0])  # same path, other content: asked again
    concept_qa(backbone, train, tmp_path / "cache", data, progress=False)
    assert len(cached()) == 2
    concept_qa(backbone, train, tmp_path / "cache", SimpleNamespace(**{**vars(data), "class_noun": "toy"}),
               progress=False)
    assert len(cached()) == 3


def test_photo_features_are_remembered_within_a_memory_bound_and_computed_again_beyond_it(backbone):
    """The least recently used photo's features are dropped beyond `memory_gib` and computed again, equal, when
    asked for; a photo asked for again becomes the most recently used."""
    from yochameleon.concept.encoder import PhotoFeatures

    photos = [str(p) for p in sorted((DEMO / "corgi").rglob("*.jpg"))[:3]]
    unbounded = PhotoFeatures(backbone)
    reference = unbounded(photos)
    one_photo = reference[0].numel() * reference[0].element_size()
    assert list(unbounded.memory) == photos and unbounded.memory_bytes == 3 * one_photo
    bounded = PhotoFeatures(backbone, memory_gib=2.5 * one_photo / 2**30)  # room for two photos
    assert torch.equal(bounded(photos), reference)
    assert list(bounded.memory) == photos[1:] and bounded.memory_bytes == 2 * one_photo
    bounded(photos[1:2])  # photos[1] is now the most recently used: photos[2] goes first
    # A photo computed again alone is computed in a batch of one: on several threads its last bits may differ from
    # its row of the batch of three, so it is compared with the same photo computed alone.
    alone = PhotoFeatures(backbone)(photos[:1])
    assert torch.allclose(alone, reference[:1], atol=1e-5)
    assert torch.equal(bounded(photos[:1]), alone)
    assert list(bounded.memory) == [photos[1], photos[0]]
    nothing_kept = PhotoFeatures(backbone, memory_gib=0)  # a photo larger than the bound is computed, not kept
    assert torch.equal(nothing_kept(photos[:1]), alone) and not nothing_kept.memory


def test_features_from_a_chosen_decoder_layer_are_recorded_with_the_encoder_and_read_back(backbone, tmp_path):
    """`encoder.feature_layer`: n reads the states after decoder layer n (the last layer's are the default's), is
    written into the encoder's config and read back by `photo_features`; a layer the backbone lacks is refused."""
    from yochameleon.concept.encoder import (EncoderError, PhotoFeatures, encoder_config_for, load_encoder,
                                             new_encoder, photo_features, read_encoder_config, save_encoder)

    photos = [str(p) for p in sorted((DEMO / "corgi").rglob("*.jpg"))[:2]]
    layers = backbone.model.config.get_text_config().num_hidden_layers
    default = PhotoFeatures(backbone)(photos)
    assert torch.allclose(PhotoFeatures(backbone, layer=layers)(photos), default, atol=1e-5)
    first = PhotoFeatures(backbone, layer=1)
    assert first(photos).shape == default.shape and not torch.allclose(first(photos), default, atol=1e-3)
    for wrong in (0, layers + 1):
        with pytest.raises(EncoderError, match=f"feature_layer={wrong}: the backbone has decoder layers 1 to {layers}"):
            PhotoFeatures(backbone, layer=wrong)
    config = encoder_config_for(backbone, 4, 3, backbone.default_first_token, features=first, width=32, layers=1,
                                heads=2)
    assert config.feature_layer == 1
    save_encoder(tmp_path / "enc", new_encoder(backbone, config), backbone.fingerprint())
    loaded = load_encoder(tmp_path / "enc", backbone)
    assert loaded.config.feature_layer == 1
    assert torch.equal(photo_features(loaded.config, backbone)(photos), first(photos))
    raw = json.loads((tmp_path / "enc" / "encoder_config.json").read_text())
    (tmp_path / "enc" / "encoder_config.json").write_text(json.dumps(raw | {"feature_layer": "middle"}))
    with pytest.raises(EncoderError, match="field 'feature_layer' is 'middle'"):
        read_encoder_config(tmp_path / "enc")
    del raw["feature_layer"]  # an encoder written before the field: the last hidden states
    (tmp_path / "enc" / "encoder_config.json").write_text(json.dumps(raw))
    assert read_encoder_config(tmp_path / "enc")[0].feature_layer is None


def _tiny_vision_checkpoint(directory: Path, kind: str) -> Path:
    """A small random vision checkpoint in transformers' format, as a user's local DINOv2 or CLIP folder is."""
    from transformers import BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    if kind == "dinov2":
        model = Dinov2Model(Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=48, image_size=32, patch_size=8))
        processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:  # a whole CLIP (text and vision towers): its vision tower is read
        model = CLIPModel(CLIPConfig(text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 32},
                                     vision_config={"hidden_size": 20, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                    "intermediate_size": 40, "image_size": 32, "patch_size": 16},
                                     projection_dim=8))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# CLIP (its vision tower read through .vision_model) in the slow suite: the fast suite keeps under 10 minutes.
@pytest.mark.parametrize(("kind", "tokens", "width"), [("dinov2", 17, 24),
                                                       pytest.param("clip", 5, 20, marks=pytest.mark.slow)])
def test_an_encoder_over_a_local_vision_checkpoint_trains_encodes_and_is_refused_on_another(
        tmp_path, cache_dir, tiny_path, kind, tokens, width):
    """encoder.feature_source=vision: the features are the local checkpoint's last hidden states (every token);
    the encoder records the checkpoint and reads it again on load; a concept is added with it; a moved or
    another checkpoint is refused with the folder named and nothing loaded changed."""
    from yochameleon.concept.encoder import EncoderError, read_encoder_config
    from yochameleon.inference import PersonalizedModel
    from yochameleon.training.encoder_recipe import train_encoder

    vision = _tiny_vision_checkpoint(tmp_path / kind, kind)
    root = _concept_tree(tmp_path / "concepts")
    train_encoder(_encoder_cfg(cache_dir, root, "trainer.steps=2", "encoder.feature_source=vision",
                               f"encoder.feature_model={vision}"), tmp_path / "run")
    encoder_dir = tmp_path / "run" / "encoder"
    config, raw = read_encoder_config(encoder_dir)
    assert (config.feature_source, config.feature_dim, config.feature_tokens) == ("vision", width, tokens)
    assert raw["feature_model"]["path"] == str(vision.resolve())
    pm = PersonalizedModel.load(encoder=encoder_dir, device="cpu")
    added = pm.add_concept("corgi", DEMO / "corgi" / "train")
    assert added.input_rows.shape == (1 + 4 + 3, pm.backbone.hidden_size)
    assert 0.0 <= pm.recognize(DEMO / "corgi" / "test" / "03.jpg", concept="corgi").probability <= 1.0
    # Another checkpoint at the recorded folder: refused, naming it; the concept already added stays.
    other = _tiny_vision_checkpoint(tmp_path / "other", "clip" if kind == "dinov2" else "dinov2")
    shutil.move(str(vision), str(tmp_path / "moved"))
    with pytest.raises(EncoderError, match=f"{vision}.*not there"):
        pm.add_concept("dog", DEMO / "corgi" / "train", encoder=encoder_dir)
    shutil.move(str(other), str(vision))
    with pytest.raises(EncoderError, match=f"{vision} is not the one this encoder was trained on"):
        pm.add_concept("dog", DEMO / "corgi" / "train", encoder=encoder_dir)
    assert "corgi" in pm.concepts and "dog" not in pm.concepts


def test_feature_source_vision_without_a_checkpoint_is_refused_with_the_key_to_set(tmp_path, cache_dir, tiny_path):
    from yochameleon.training.encoder_recipe import EncoderRunError, train_encoder

    root = _concept_tree(tmp_path / "concepts")
    with pytest.raises(EncoderRunError, match="encoder.feature_model="):
        train_encoder(_encoder_cfg(cache_dir, root, "trainer.steps=2", "encoder.feature_source=vision"),
                      tmp_path / "run")
    assert not (tmp_path / "run" / "encoder").exists()
