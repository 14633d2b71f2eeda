"""Recognition scored the Yo'LLaVA way, but from logits: P(Yes) vs P(No) in one forward pass."""

from __future__ import annotations

import torch

from yochameleon.data import templates
from yochameleon.model.decoding import answer_prompts, left_pad

DEFAULT_QUESTION = templates.RECOGNITION_QUESTIONS[0]


def yes_no_ids(tokenizer) -> tuple[int, int]:
    """First token of "Yes" and of "No" (our answers all start with one of these words)."""
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer("No", add_special_tokens=False)["input_ids"][0]
    if yes == no:
        raise ValueError("the tokenizer maps 'Yes' and 'No' to the same first token; recognition cannot be scored")
    return yes, no




@torch.no_grad()
def yes_probabilities(model, builder, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 8,
                      flip: bool = False, self_prompt: str = "forced") -> torch.Tensor:
    """P(Yes) / (P(Yes) + P(No)) for each image, after the self-prompt group (forced or emitted) when it is on."""
    yes, no = yes_no_ids(builder.backbone.tokenizer)
    device = builder.backbone.device
    scores = []
    for start in range(0, len(images), batch_size):
        prompts = [builder.prompt_ids(question, image, flip) for image in images[start:start + batch_size]]
        prompts = answer_prompts(model, builder, prompts, "recognition", self_prompt)
        ids, mask = left_pad(prompts, builder.backbone.tokenizer.pad_token_id)
        logits = model.last_logits(ids.to(device), mask.to(device)).float()
        scores.append(torch.softmax(logits[:, [yes, no]], dim=-1)[:, 0].cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def recognition_accuracy(p_yes_positives: torch.Tensor, p_yes_negatives: torch.Tensor) -> dict:
    """Positive, negative and weighted (0.5 pos + 0.5 neg) accuracy at the 0.5 threshold, and AUROC.

    The accuracies are the Yo'LLaVA protocol. AUROC (P(Yes) of positives ranked above negatives;
    0.5 is chance) does not depend on the threshold: an adapter that ranks every positive above
    every negative but answers No to all of them scores weighted 0.5 and AUROC 1.0.
    """
    from torchmetrics.functional.classification import binary_auroc

    pos = float((p_yes_positives > 0.5).float().mean()) if len(p_yes_positives) else float("nan")
    neg = float((p_yes_negatives <= 0.5).float().mean()) if len(p_yes_negatives) else float("nan")
    auroc = float("nan")
    if len(p_yes_positives) and len(p_yes_negatives):
        scores = torch.cat([p_yes_positives, p_yes_negatives]).float()
        truth = torch.cat([torch.ones(len(p_yes_positives)), torch.zeros(len(p_yes_negatives))]).long()
        auroc = float(binary_auroc(scores, truth))
    return {"positive": pos, "negative": neg, "weighted": 0.5 * pos + 0.5 * neg, "auroc": auroc}
