"""Train / val / test: only a validation split chooses best/, the test split is scored once and reported."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf

from conftest import DEMO, compose
from yochameleon.data.concept import ConceptData
from yochameleon.errors import ConceptDataError


def _copy(files, folder):
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture()
def splits(tmp_path):
    """The demo corgi with its held-out photos and negatives split into validation and test folders."""
    held = sorted((DEMO / "corgi" / "test").iterdir())
    negatives = sorted((DEMO / "negatives" / "test").iterdir())
    return {"val_photos": _copy(held[:1], tmp_path / "val"), "test_photos": _copy(held[1:], tmp_path / "test"),
            "val_negatives": _copy(negatives[:4], tmp_path / "val-neg"),
            "test_negatives": _copy(negatives[4:], tmp_path / "test-neg")}


def _concept(**overrides) -> ConceptData:
    cfg = {"name": "corgi", "photos": str(DEMO / "corgi" / "train"), "negatives": [str(DEMO / "negatives" / "train")],
           "test_photos": None, "test_negatives": None, "conversations": None}
    cfg.update({k: ([str(v)] if k.endswith("negatives") else str(v)) for k, v in overrides.items()})
    return ConceptData.from_config(OmegaConf.create(cfg))


def test_selection_uses_the_validation_split_and_reporting_the_test_split(splits):
    concept = _concept(**splits)
    chosen, report = concept.selection_split(), concept.test_split()
    assert chosen.name == "val" and chosen.heldout and len(chosen.positives) == 1 and len(chosen.negatives) == 4
    assert report.name == "test" and report.heldout and len(report.negatives) == 4
    assert not set(chosen.positives + chosen.negatives) & set(report.positives + report.negatives)


def test_without_a_validation_split_training_photos_are_watched_and_nothing_is_held_out():
    concept = _concept(test_photos=DEMO / "corgi" / "test", test_negatives=DEMO / "negatives" / "test")
    split = concept.selection_split()
    assert split.name == "train" and not split.heldout and split.positives == concept.photos


def test_test_photos_without_test_negatives_are_labelled_not_held_out():
    concept = _concept(test_photos=DEMO / "corgi" / "test")
    split = concept.test_split()
    assert split.name == "test" and not split.heldout and "TRAINING negatives" in split.note
    assert set(split.negatives) <= set(concept.negatives)


@pytest.mark.parametrize("given", ["val_photos", "val_negatives"])
def test_half_a_validation_split_is_refused(splits, given):
    with pytest.raises(ConceptDataError, match="val_negatives|val_photos"):
        _concept(**{given: splits[given]})


def test_validation_files_shared_with_other_splits_are_refused(splits):
    with pytest.raises(ConceptDataError, match="concept.test_photos"):
        _concept(**{**splits, "val_photos": splits["test_photos"]})
    with pytest.raises(ConceptDataError, match="val_negatives and concept.test_negatives"):
        _concept(**{**splits, "val_negatives": splits["test_negatives"]})


def test_best_adapter_is_chosen_on_validation_and_test_is_scored_once(tmp_path, cache_dir, splits, capsys):
    from yochameleon.training.recipe import train

    overrides = [f"concept.{k}={v}" if k.endswith("photos") else f"concept.{k}=[{v}]" for k, v in splits.items()]
    summary = train(compose(["+concept=demo", "logger=none", "trainer.max_steps=4", "trainer.eval_every=2",
                             "trainer.sample_images=false", *overrides], cache_dir), tmp_path / "run")
    assert summary["selected_on"] == "val" and summary["final_split"] == "test"
    assert summary["val"]["eval/split"] == "val" and summary["final"]["eval/split"] == "test"
    best = json.loads((tmp_path / "run" / "best" / "adapter_config.json").read_text())
    assert best["selected_on"] == "val" and best["selection_metric"] == "eval/recognition/weighted"
    assert best["step"] in (2, 4)
    final = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert final["selected_on"] is None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval/split" in r]
    assert [r["eval/split"] for r in evaluations] == ["val", "val"]  # during training: never the test split
    assert [r["step"] for r in records if "test/split" in r] == [4]  # the test split: once, at the end
    # The end-of-run figures are best/'s (what the run tells a user to use), not the last step's adapter/'s.
    from evaluation.methods import adapter_method
    from yochameleon.inference import PersonalizedModel
    from yochameleon.metrics.recognition import recognition_metrics

    assert summary["scored_adapter"] == summary["best_adapter"] == str(tmp_path / "run" / "best")
    cfg = compose(["+concept=demo", *overrides], cache_dir)
    scores = {}
    for name in ("best", "adapter"):
        pm = PersonalizedModel.load(tmp_path / "run" / name, device="cpu", cache_dir=cache_dir)
        split = ConceptData.from_config(cfg.concept).test_split()
        builder = adapter_method(pm, {"corgi": "corgi"}).builder("corgi")  # reads the photos: no VQ cache
        scores[name] = recognition_metrics(pm.model, builder, split, 8, "eval")
    for key in ("eval/recognition/weighted", "eval/recognition/mean_p_yes_positive"):
        assert summary["final"][key] == pytest.approx(scores["best"][key], abs=1e-5), key
    if best["step"] != 4:  # best/ is another step's rows: the last step's would read otherwise
        assert scores["adapter"]["eval/recognition/mean_p_yes_positive"] != pytest.approx(
            scores["best"]["eval/recognition/mean_p_yes_positive"], abs=1e-5)
    from yochameleon.train import _print_summary

    _print_summary(summary)  # each line says which adapter it scores
    printed = capsys.readouterr().out
    assert "(validation photos; best/)" in printed and "(test photos, scored once at the end; best/)" in printed


def test_without_validation_the_final_adapter_is_kept_and_no_best_is_chosen(tmp_path, cache_dir):
    from yochameleon.training.recipe import train

    summary = train(compose(["+concept=demo", "logger=none", "trainer.max_steps=2", "trainer.eval_every=1",
                             "trainer.sample_images=false"], cache_dir), tmp_path / "run")
    assert summary["selected_on"] is None and summary["best_adapter"] is None and summary["best"] is None
    assert not (tmp_path / "run" / "best").exists()
    assert summary["final_split"] == "test" and summary["final"]["eval/split_is_heldout"] == 1.0


@pytest.mark.parametrize("held_out", ["val_negatives", "test_negatives"])
def test_a_training_negative_that_is_also_held_out_is_refused(splits, tmp_path, cache_dir, held_out):
    """issue 24 item 2: refused (not dropped), naming the file and the fix, before any model loads."""
    from yochameleon.training.recipe import train

    # The common mistake: one negatives root that holds the held-out folder (searched recursively).
    root = tmp_path / "all-negatives"
    shutil.copytree(DEMO / "negatives" / "train", root / "train")
    shutil.move(str(splits[held_out]), root / "held-out")
    splits = {**splits, held_out: root / "held-out"}
    with pytest.raises(ConceptDataError, match=f"concept.negatives and concept.{held_out}.*held-out.*of their own"):
        _concept(**{**splits, "negatives": root})
    overrides = [f"concept.{k}={v}" if not k.endswith("negatives") else f"concept.{k}=[{v}]" for k, v in splits.items()]
    run_dir = tmp_path / "run"
    with pytest.raises(ConceptDataError, match=f"concept.{held_out}"):
        train(compose(["+concept=demo", "logger=none", f"concept.negatives=[{root}]", *overrides], cache_dir), run_dir)
    assert not run_dir.exists()
    _concept(**splits)  # the same folders, laid out apart: accepted
