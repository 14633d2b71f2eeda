"""Generation scored without sampling: the teacher-forced NLL of a concept's photos under its generation prompt.

Drawing and judging samples is slow and needs a judge; the likelihood the adapter gives a held-out photo's
image tokens after "A photo of <sks>." needs one forward per photo, works for real photos on any
backbone, and is what chooses the generation side of best/ (`training/recipe.py`). It is measured in
nats per image token within the image vocabulary (the ids the sampler may draw from), so it does not
depend on how much probability the backbone puts on text ids there; uniform is log(codebook size).
"""

from __future__ import annotations

import math

import torch

from yochameleon.data import templates


@torch.no_grad()
def image_code_nll(model, builder, images: list, prompt: str = templates.GENERATION_PROMPTS[0],
                   batch_size: int = 8) -> torch.Tensor:
    """Per-image mean NLL (nats per image token, within the image ids) of each image's codes after `prompt`.

    `model` is a `PersonalizedChameleon`, `builder` a `SampleBuilder` (its layout and self-prompt group
    make the prompt exactly as drawing does: the prompt, the group, begin-of-image). Images are read
    unflipped, as a user's photo is.
    """
    backbone = builder.backbone
    device = backbone.device
    prefix = builder.image_prompt_ids(prompt)  # ends with begin-of-image
    image_ids = backbone.image_map.image_token_ids.to(device)
    index_of = torch.full((int(image_ids.max()) + 1,), -1, dtype=torch.long, device=device)
    index_of[image_ids] = torch.arange(len(image_ids), device=device)
    scorer = backbone.image_scorer()  # hidden -> logits over the image ids (the family's image head)
    out = []
    for start in range(0, len(images), batch_size):
        codes = [backbone.image_codes(image, False, builder.cache) for image in images[start:start + batch_size]]
        ids = torch.tensor([prefix + c for c in codes], dtype=torch.long, device=device)  # equal lengths: no padding
        hidden, _ = model.hidden_states(ids, torch.ones_like(ids))
        n = len(codes[0])
        logits = scorer(hidden[:, len(prefix) - 1:len(prefix) - 1 + n]).float()  # (B, n, image ids)
        targets = index_of[ids[:, len(prefix):]]
        nll = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
        out.append(nll.mean(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def generation_metrics(model, builder, split, batch_size: int = 8, prefix: str = "eval") -> dict:
    """`<prefix>/generation/nll` (mean over the split's positives) and `<prefix>/generation/nll_uniform`."""
    if not split.positives:
        return {}
    nll = image_code_nll(model, builder, list(split.positives), batch_size=batch_size)
    return {f"{prefix}/generation/nll": float(nll.mean()),
            f"{prefix}/generation/nll_uniform": math.log(len(builder.backbone.image_map.image_token_ids))}
