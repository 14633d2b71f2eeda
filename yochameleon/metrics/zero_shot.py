"""Scoring concepts that were never trained on: held-out concept folders, each introduced from a few photos.

One protocol for the encoder and for every baseline, so their figures compare: for each held-out concept,
the first `n_refs` of its first `max_photos` photos introduce it; its photos after the first `max_photos`
are the positives (the same with 1 and with 5 reference photos); one held-out photo of every *other* concept
of the split is a negative. Recognition (P(Yes) after the forced self-prompt group): AUROC and weighted
accuracy per concept, then their means; text QA (a concept folder's `checks.json`) in training and held-out
wordings. `introduce(folder, refs)` gives the (model, builder) that asks about the concept.
"""

from __future__ import annotations

import math
import time

from yochameleon.metrics.options import score_text_checks
from yochameleon.metrics.recognition import recognition_accuracy, yes_probabilities


def split_photos(folders, max_photos: int) -> dict[str, tuple[list, list, list]]:
    """name -> (reference candidates, positives, negatives) for each concept folder of a held-out split."""
    out = {}
    for folder in folders:
        refs, positives = folder.photos[:max_photos], folder.photos[max_photos:]
        if not positives:
            positives = folder.photos[-1:]  # a folder with max_photos or fewer: its last photo (then also a ref)
        negatives = [other.photos[max_photos] if len(other.photos) > max_photos else other.photos[-1]
                     for other in folders if other.name != folder.name]
        out[folder.name] = ([str(p) for p in refs], [str(p) for p in positives], [str(p) for p in negatives])
    return out


def _mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else float("nan")


def introduced_scores(model, builder, positives, negatives, checks=(), batch_size: int = 8) -> dict:
    """One subject as `builder` introduces it: recognition of `positives` against `negatives` (P(Yes) after the
    forced self-prompt group), its text checks, and the prompt tokens its introduction costs."""
    p_pos = yes_probabilities(model, builder, positives, batch_size=batch_size)
    p_neg = yes_probabilities(model, builder, negatives, batch_size=batch_size)
    scores = recognition_accuracy(p_pos, p_neg)
    if checks:
        scores |= score_text_checks(model, builder, list(checks))
    return scores | {"prompt_tokens": builder.introduction_tokens()}


def mean_scores(per_concept: dict) -> dict:
    """The mean of every figure over the concepts (NaN left out), beside the per-concept ones."""
    keys = sorted({k for s in per_concept.values() for k in s})
    means = {k: _mean([s[k] for s in per_concept.values() if k in s]) for k in keys}
    return means | {"concepts": len(per_concept), "per_concept": per_concept}


def zero_shot_scores(introduce, folders, n_refs: int, max_photos: int, batch_size: int = 8,
                     text_qa: bool = True) -> dict:
    """Means over the concepts of a held-out split (and `per_concept`): auroc, weighted, positive, negative,
    text_qa / text_qa_heldout where the folders have checks, seconds to introduce a concept, prompt tokens."""
    per_concept, photos = {}, split_photos(folders, max_photos)
    for folder in folders:
        refs, positives, negatives = photos[folder.name]
        started = time.perf_counter()
        model, builder = introduce(folder, refs[:n_refs])
        seconds = time.perf_counter() - started
        per_concept[folder.name] = introduced_scores(model, builder, positives, negatives,
                                                     folder.checks if text_qa else (), batch_size)
        per_concept[folder.name]["seconds"] = seconds
    return mean_scores(per_concept) | {"n_refs": n_refs}
