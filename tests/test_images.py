"""Bad input: every odd image mode loads as RGB; broken files and folders fail with the path and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import DEMO
from yochameleon.data.concept import ConceptData
from yochameleon.data.images import (check_photo_count, list_images, list_images_recursive, load_image,
                                     validate_concept_name)
from yochameleon.errors import ConceptDataError, ImageError

PHOTO = sorted((DEMO / "corgi" / "train").glob("*.jpg"))[0]


@pytest.fixture
def rgb() -> Image.Image:
    with Image.open(PHOTO) as image:
        return image.convert("RGB").resize((64, 48))


def mode_of(path) -> str:
    with Image.open(path) as image:
        return image.mode


def test_cmyk_palette_and_grayscale_become_rgb(tmp_path, rgb):
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    rgb.convert("P").save(tmp_path / "palette.png")
    rgb.convert("L").save(tmp_path / "gray.png")
    rgb.convert("1").save(tmp_path / "bw.png")
    for name in ("cmyk.jpg", "palette.png", "gray.png", "bw.png"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (64, 48), name
    cmyk = np.asarray(load_image(tmp_path / "cmyk.jpg"), dtype=float)
    assert abs(cmyk.mean() - np.asarray(rgb, dtype=float).mean()) < 20


def test_16_bit_images_keep_their_brightness(tmp_path, rgb):
    gray = np.asarray(rgb.convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    assert mode_of(tmp_path / "deep.png").startswith("I")
    loaded = np.asarray(load_image(tmp_path / "deep.png"), dtype=float)[..., 0]
    assert 5 < loaded.mean() < 250 and abs(loaded.mean() - gray.mean()) < 2


@pytest.mark.parametrize("scale, mode", [(65535 / 255, "I"), (2**31 / 256, "I"), (1 / 255, "F"), (1.0, "F")])
def test_32_bit_images_scale_by_their_range(tmp_path, rgb, scale, mode):
    gray = np.asarray(rgb.convert("L"), dtype=np.float64)
    data = (gray * scale).astype(np.int32 if mode == "I" else np.float32)
    Image.fromarray(data).save(tmp_path / "deep.tif")
    assert mode_of(tmp_path / "deep.tif") == mode
    loaded = np.asarray(load_image(tmp_path / "deep.tif"), dtype=float)[..., 0]
    assert abs(loaded.mean() - gray.mean()) < 2


def test_transparency_is_composited_on_white(tmp_path, rgb):
    rgba = rgb.convert("RGBA")
    alpha = np.full((48, 64), 255, dtype=np.uint8)
    alpha[:, :32] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "rgba.png")
    rgba.convert("LA").save(tmp_path / "la.png")
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "ptrans.png", transparency=0)
    for name in ("rgba.png", "la.png"):
        image = np.asarray(load_image(tmp_path / name))
        assert (image[:, :32] == 255).all() and not (image[:, 32:] == 255).all(), name
    assert load_image(tmp_path / "ptrans.png").mode == "RGB"


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    rgb.save(tmp_path / "rotated.jpg", exif=exif)
    with Image.open(tmp_path / "rotated.jpg") as raw:
        assert raw.size == (64, 48)
    assert load_image(tmp_path / "rotated.jpg").size == (48, 64)


def test_broken_files_name_the_file_and_the_fix(tmp_path):
    data = PHOTO.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(4000))
    for name in ("truncated.jpg", "noise.jpg", "missing.jpg"):
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / name)
        assert name in str(err.value)
        assert "re-export" in str(err.value) or "path" in str(err.value)


def test_photo_folders(tmp_path):
    with pytest.raises(ConceptDataError, match="does not exist"):
        list_images(tmp_path / "nope", "photos of <bo>")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ConceptDataError, match="has no images") as err:
        list_images(tmp_path / "empty", "photos of <bo>")
    assert str(tmp_path / "empty") in str(err.value)
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "a.JPG").write_bytes(PHOTO.read_bytes())
    (tmp_path / "some" / ".hidden.jpg").write_bytes(PHOTO.read_bytes())
    assert [p.name for p in list_images(tmp_path / "some", "photos")] == ["a.JPG"]


def test_negative_pools_are_recursive_and_deduplicated(tmp_path):
    (tmp_path / "pool" / "sub").mkdir(parents=True)
    (tmp_path / "pool" / "sub" / "a.png").write_bytes(PHOTO.read_bytes())
    (tmp_path / "pool" / "b.jpg").write_bytes(PHOTO.read_bytes())
    found = list_images_recursive([tmp_path / "pool", tmp_path / "pool" / "sub"], "negative pool")
    assert sorted(p.name for p in found) == ["a.png", "b.jpg"]
    with pytest.raises(ConceptDataError, match="negative pool"):
        list_images_recursive([tmp_path / "pool", tmp_path / "gone"], "negative pool")


def test_photo_counts(caplog, recwarn):
    with pytest.raises(ConceptDataError):
        check_photo_count([], "dir")
    with caplog.at_level("WARNING"):
        check_photo_count([PHOTO], "dir")
    # Issue 25.9: printed twice (a log line and a Python warning of the same text).
    assert [r.getMessage() for r in caplog.records] == [
        "1 photo in dir: personalization works best with 3-5 photos of the subject"]
    assert not recwarn.list


@pytest.mark.parametrize("name", ["bo", "my-dog_2", "Mam"])
def test_good_concept_names(name):
    assert validate_concept_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "..", "a b", "<x>", "", "x" * 65, "a\\b"])
def test_bad_concept_names(name):
    with pytest.raises(ConceptDataError, match="not allowed"):
        validate_concept_name(name)


def test_one_photo_concept_loads_with_a_warning(tmp_path, caplog):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.jpg").write_bytes(PHOTO.read_bytes())
    cfg = OmegaConf.create({"name": "bo", "photos": str(tmp_path / "one"), "negatives": [str(DEMO / "negatives")],
                            "test_photos": None, "conversations": None})
    with caplog.at_level("WARNING"):
        concept = ConceptData.from_config(cfg)
    assert sum("1 photo in" in r.getMessage() for r in caplog.records) == 1
    assert len(concept.photos) == 1 and len(concept.negatives) > 10
    assert not set(concept.negatives) & set(concept.photos)
