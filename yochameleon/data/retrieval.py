"""Ranking the negative pool against the concept photos (pure tensor functions, easy to test).

Similarity is cosine similarity of unit vectors: HIGHER means CLOSER to the subject.
"""

from __future__ import annotations

import torch


def cosine_topk(queries: torch.Tensor, pool: torch.Tensor, k: int, chunk: int = 65536, index: str = "brute"):
    """Top-k pool rows by cosine for each query, best first: (scores (Q, k), indices (Q, k)).

    `index="brute"` scans the pool in chunks (memory-bounded); `index="faiss"` uses an exact
    faiss inner-product index (pip install faiss-cpu or faiss-gpu), for pools of millions.
    """
    k = min(k, pool.shape[0])
    if index == "faiss":
        return _faiss_topk(queries, pool, k)
    best_scores = torch.full((queries.shape[0], 0), float("-inf"))
    best_index = torch.zeros((queries.shape[0], 0), dtype=torch.long)
    for start in range(0, pool.shape[0], chunk):
        scores = queries @ pool[start:start + chunk].T
        best_scores = torch.cat([best_scores, scores], dim=1)
        best_index = torch.cat([best_index, torch.arange(start, start + scores.shape[1]).expand_as(scores)], dim=1)
        keep = torch.topk(best_scores, min(k, best_scores.shape[1]), dim=1)
        best_scores, best_index = keep.values, best_index.gather(1, keep.indices)
    return best_scores, best_index


def hard_negatives(photos: torch.Tensor, pool: torch.Tensor, per_photo: int, excluded: set[int],
                   index: str = "brute") -> list[tuple]:
    """For each photo its `per_photo` most similar pool images that are not excluded (duplicates of the subject).

    Returns [(pool index, score, photo index)], each pool image at most once, in photo order, best first.
    """
    # Enough candidates that every photo still finds `per_photo` new ones after its neighbours took theirs.
    scores, found = cosine_topk(photos, pool, per_photo * photos.shape[0] + len(excluded), index=index)
    chosen, seen = [], set(excluded)
    for photo in range(photos.shape[0]):
        taken = 0
        for score, idx in zip(scores[photo].tolist(), found[photo].tolist()):
            if taken == per_photo:
                break
            if idx not in seen:
                seen.add(idx)
                chosen.append((idx, score, photo))
                taken += 1
    return chosen


def closeness(photos: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """(P,) mean cosine similarity of each pool image to the concept photos (higher = closer)."""
    return (pool @ photos.T).mean(dim=1)


def soft_positive_tiers(scores: torch.Tensor, k_g: int, spacing: int, pool_size: int,
                        excluded: set[int]) -> list[dict]:
    """Split the `pool_size` closest images into tiers; closer tiers get more generation tokens.

    The paper's scheme: sort by similarity, split into k_g/spacing - 1 parts; part i uses the
    first spacing*(i+1) generation tokens, and the real photos use all k_g. Here the closest
    part gets spacing*(k_g/spacing - 1) tokens and the farthest gets `spacing`.
    Returns [{"n_tokens": int, "items": [(pool index, score), ...]}], closest tier first.
    """
    parts = k_g // spacing - 1
    if parts < 1:
        return []
    order = [i for i in torch.argsort(scores, descending=True).tolist() if i not in excluded][:pool_size]
    tiers = []
    for rank, chunk in enumerate(torch.tensor(order, dtype=torch.long).tensor_split(parts) if order else []):
        tiers.append({"n_tokens": spacing * (parts - rank),
                      "items": [(int(i), float(scores[i])) for i in chunk.tolist()]})
    return [t for t in tiers if t["items"]]


def easy_negatives(pool_count: int, count: int, excluded: set[int], seed: int) -> list[int]:
    """`count` random pool indices outside `excluded` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    candidates = [i for i in torch.randperm(pool_count, generator=generator).tolist() if i not in excluded]
    return candidates[:count]


def _faiss_topk(queries: torch.Tensor, pool: torch.Tensor, k: int):
    try:
        import faiss
    except ImportError as err:
        from yochameleon.errors import YoChameleonError

        raise YoChameleonError("retrieval.index=faiss needs faiss: pip install faiss-cpu (or faiss-gpu), "
                               "or use retrieval.index=brute") from err
    flat = faiss.IndexFlatIP(pool.shape[1])  # exact inner product = cosine on unit vectors
    flat.add(pool.float().contiguous().numpy())
    scores, index = flat.search(queries.float().contiguous().numpy(), k)
    return torch.from_numpy(scores), torch.from_numpy(index).long()
