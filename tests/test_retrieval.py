"""3S ingredients: ranking direction, hard/easy negatives, soft-positive tiers, the cached preparation."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import DEMO, compose
from yochameleon.data.concept import ConceptData
from yochameleon.data.preparation import prepare_concept
from yochameleon.data.retrieval import closeness, cosine_topk, easy_negatives, hard_negatives, soft_positive_tiers


def synthetic(similarities: list[float]):
    """One photo along e0 and pool vectors whose cosine with it is exactly `similarities`."""
    photo = torch.zeros(1, 4)
    photo[0, 0] = 1.0
    pool = torch.stack([torch.tensor([s, (1 - s * s) ** 0.5, 0.0, 0.0]) for s in similarities])
    return photo, pool


def test_closer_means_higher_cosine_and_comes_first():
    photo, pool = synthetic([0.1, 0.9, 0.5, 0.99, -0.3])
    scores, index = cosine_topk(photo, pool, 3)
    assert index[0].tolist() == [3, 1, 2] and scores[0, 0] == pytest.approx(0.99)
    chunked = cosine_topk(photo, pool, 3, chunk=2)
    assert torch.equal(chunked[1], index)
    assert closeness(photo, pool).argmax().item() == 3


def test_faiss_index_agrees_with_brute_force():
    pytest.importorskip("faiss", reason="faiss-cpu is in the [dev] and [faiss] extras")
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(4, 32, generator=generator), dim=-1)
    pool = F.normalize(torch.randn(5000, 32, generator=generator), dim=-1)
    brute, fast = cosine_topk(queries, pool, 10, chunk=777), cosine_topk(queries, pool, 10, index="faiss")
    assert torch.equal(brute[1], fast[1]) and torch.allclose(brute[0], fast[0], atol=1e-5)


def test_hard_negatives_skip_excluded_and_never_repeat():
    photos = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1]]), dim=-1)
    pool = F.normalize(torch.tensor([[1.0, 0.01], [0.95, 0.05], [0.0, 1.0], [0.8, 0.2], [0.7, 0.3]]), dim=-1)
    two_each = [i for i, _, _ in hard_negatives(photos, pool, per_photo=2, excluded={0})]
    assert 0 not in two_each and len(two_each) == len(set(two_each)) == 4
    assert two_each[:2] == [1, 3]  # photo 0's two nearest once the duplicate is excluded
    picked = [i for i, _, _ in hard_negatives(photos, pool, per_photo=1, excluded={0})]
    assert picked == [1, 3]  # photo 1's nearest (1) is taken, so it gets the next one
    easy = easy_negatives(len(pool), 3, set(picked) | {0}, seed=0)
    assert sorted(easy) == [2, 4]  # asked for 3, only 2 are neither hard nor excluded


def test_tiers_follow_the_paper_scheme_and_closer_tiers_get_more_tokens():
    similarities = [i / 20 for i in range(20)]
    _, pool = synthetic(similarities)
    scores = torch.tensor(similarities)
    tiers = soft_positive_tiers(scores, k_g=16, spacing=2, pool_size=14, excluded={19})
    assert [t["n_tokens"] for t in tiers] == [14, 12, 10, 8, 6, 4, 2]  # k_g/spacing - 1 = 7 parts
    assert sum(len(t["items"]) for t in tiers) == 14
    first, last = tiers[0]["items"], tiers[-1]["items"]
    assert min(s for _, s in first) > max(s for _, s in last)
    assert 19 not in [i for t in tiers for i, _ in t["items"]]
    assert soft_positive_tiers(scores, k_g=2, spacing=2, pool_size=5, excluded=set()) == []


@pytest.fixture
def concept_copy(tmp_path):
    shutil.copytree(DEMO, tmp_path / "demo")
    return tmp_path / "demo"


def _concept(root, **extra):
    cfg = OmegaConf.create({"name": "corgi", "photos": str(root / "corgi" / "train"), "test_photos": None,
                            "test_negatives": None,
                            "negatives": [str(root / "negatives" / "train")], "conversations": None,
                            "class_noun": "dog", "category": "pet", **extra})
    return ConceptData.from_config(cfg)


def test_prepare_writes_manifest_and_sheets_then_reuses_the_cache(tmp_path, backbone, cache_dir, concept_copy):
    cfg = compose(["+concept=demo", "recipe.conversations.generate_when_missing=false"], cache_dir)
    concept = _concept(concept_copy)
    first = prepare_concept(cfg, concept, backbone, tmp_path / "cache", progress=False)
    manifest = json.loads((first.directory / "manifest.json").read_text())
    assert not first.from_cache and manifest["embedder_quality"] == "fallback"
    assert len(manifest["hard_negatives"]) == 3 * 2 and len(manifest["easy_negatives"]) == 10
    assert "higher = closer" in manifest["similarity"]
    assert (first.directory / "sheet_hard_negatives.png").exists()
    assert list(first.directory.glob("sheet_soft_positives_tier_0_*.png"))
    start = time.perf_counter()
    again = prepare_concept(cfg, concept, backbone, tmp_path / "cache", progress=False)
    assert again.from_cache and again.directory == first.directory and time.perf_counter() - start < 1.0
    # Changing a photo's content invalidates the cache.
    photo = concept.photos[0]
    photo.write_bytes(concept.photos[1].read_bytes())
    changed = prepare_concept(cfg, _concept(concept_copy), backbone, tmp_path / "cache", progress=False)
    assert not changed.from_cache and changed.directory != first.directory


def test_duplicates_unreadable_files_and_a_small_pool(tmp_path, backbone, cache_dir, concept_copy, caplog):
    from PIL import Image

    pool = concept_copy / "negatives" / "train"
    shutil.copy(concept_copy / "corgi" / "train" / "00.jpg", pool / "sneaky_copy.jpg")
    # A resized, re-encoded copy of a held-out photo: the same subject, and test data.
    Image.open(concept_copy / "corgi" / "test" / "03.jpg").resize((200, 200)).save(pool / "resized.png")
    (pool / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = compose(["+concept=demo", "recipe.conversations.generate_when_missing=false",
                   "retrieval.easy_negatives=500"], cache_dir)
    concept = _concept(concept_copy, test_photos=str(concept_copy / "corgi" / "test"))
    prep = prepare_concept(cfg, concept, backbone, tmp_path / "cache", progress=False)
    manifest = json.loads((prep.directory / "manifest.json").read_text())
    assert sorted(d["path"].rsplit("/", 1)[1] for d in manifest["duplicates_excluded"]) == ["resized.png",
                                                                                            "sneaky_copy.jpg"]
    chosen = prep.hard_negatives + prep.easy_negatives + [p for p, _ in prep.soft_positives]
    assert not any(p.endswith(("sneaky_copy.jpg", "resized.png")) for p in chosen)
    assert [s["path"].endswith("broken.jpg") for s in manifest["skipped_unreadable"]] == [True]
    assert any("500 easy negatives" in w for w in manifest["warnings"])


def test_generated_conversations_name_the_subject_sks(tmp_path, backbone, cache_dir, concept_copy):
    cfg = compose(["+concept=demo"], cache_dir)
    prep = prepare_concept(cfg, _concept(concept_copy), backbone, tmp_path / "cache", progress=False)
    assert len(prep.conversations) == 3 * 10
    assert all("<sks>" in turn["question"] and "dog" not in turn["question"] for turn in prep.conversations)


@pytest.mark.parametrize("family", ["backbone", "janus_backbone"])
def test_agreed_answer_is_the_most_likely_summed_over_the_photos(family, request, demo_photos):
    """`agreed_answer` scores each candidate (its ids, then end of turn) under every photo's prompt in one padded
    batch; the same sums computed one unpadded row at a time, from the log-softmax, must pick the same answer
    (Chameleon: one softmax over every id; Janus: the text head's own)."""
    from yochameleon.data.images import load_image
    from yochameleon.data.preparation import agreed_answer
    from yochameleon.model.chat import chat_layout
    from yochameleon.model.personalized import PersonalizedChameleon

    backbone = request.getfixturevalue(family)
    plain, layout = PersonalizedChameleon(backbone.model, []), chat_layout(backbone)
    prompts = [layout.prompt(layout.text(question), image=layout.image(backbone.shown_image_codes(load_image(p))))
               for p, question in zip(demo_photos[:3], ["What color is it?", "What color?", "What color is the dog?"])]
    words = ["brown.", "a brown and white dog.", "white", "it is black"]
    candidates = {w: layout.text(w) for w in words}  # different lengths: padding must not count

    def summed(ids):
        total = 0.0
        for prompt in prompts:
            target = layout.answer(ids)
            seq = torch.tensor([[*prompt, *target]])
            with torch.no_grad():
                hidden, _ = plain.hidden_states(seq, torch.ones_like(seq))
                logits = plain.logits(hidden[0, len(prompt) - 1:-1]).float()
                split = backbone.model.text_vocab_size  # None on Chameleon; Janus scores text within its text head
                logp = torch.log_softmax(logits if split is None else logits[:, :split], dim=-1)
            total += float(logp.gather(1, torch.tensor(target)[:, None]).sum())
        return total

    expected = max(words, key=lambda w: summed(candidates[w]))
    assert agreed_answer(plain, backbone, layout, prompts, candidates) == expected
    for other in words:  # a lone candidate is the answer; of two, the likelier
        assert agreed_answer(plain, backbone, layout, prompts, {other: candidates[other]}) == other
    loser = min(words, key=lambda w: summed(candidates[w]))
    assert agreed_answer(plain, backbone, layout, prompts, {loser: candidates[loser], expected: candidates[expected]}
                         ) == expected


def test_agreed_conversations_give_each_question_one_of_the_photos_answers(backbone, demo_photos):
    from types import SimpleNamespace

    from yochameleon.data.images import load_image
    from yochameleon.data.preparation import generate_conversations

    photos = demo_photos[:3]
    images = [load_image(p) for p in photos]
    concept = SimpleNamespace(class_noun="dog", category="pet")
    own = generate_conversations(backbone, photos, images, concept, progress=False)
    agreed = generate_conversations(backbone, photos, images, concept, progress=False, agree=True)
    assert [(t["source_photo"], t["question"]) for t in agreed] == [(t["source_photo"], t["question"]) for t in own]
    for question in {t["question"] for t in own}:
        answers = {t["answer"] for t in agreed if t["question"] == question}
        assert len(answers) == 1 and answers <= {t["answer"] for t in own if t["question"] == question}
    for mine, theirs in zip(agreed, own):  # a photo read otherwise keeps its own reading beside the agreed answer
        assert mine.get("photo_answer", mine["answer"]) == theirs["answer"] and "photo_answer" not in theirs
    assert any("photo_answer" in turn for turn in agreed)


def test_open_clip_embedder_from_a_local_checkpoint(tmp_path):
    import open_clip
    from PIL import Image

    from yochameleon.data.embedders import EmbedderError, OpenClipEmbedder

    model = open_clip.create_model("ViT-S-32", pretrained=None)
    checkpoint = tmp_path / "vit-s-32-random.pt"
    torch.save(model.state_dict(), checkpoint)
    embedder = OpenClipEmbedder("ViT-S-32", checkpoint)
    vectors = embedder.embed([Image.new("RGB", (80, 60), "red"), Image.new("RGB", (50, 50), "blue")])
    assert vectors.shape[0] == 2 and torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(EmbedderError, match="does not fit"):
        OpenClipEmbedder("ViT-B-32", checkpoint)
    with pytest.raises(EmbedderError, match="does not exist"):
        OpenClipEmbedder("ViT-S-32", tmp_path / "none.pt")
