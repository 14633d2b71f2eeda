"""Recognition scored the Yo'LLaVA way: P(Yes) vs P(No) from the logits in one forward pass, and
free answers parsed with word boundaries.

`recognition_metrics` scores one split into the dict training logs (`<prefix>/recognition/...`);
the harness, inference and the toy knowledge report use the pieces it is made of.
"""

from __future__ import annotations

import re

import torch

from yochameleon.data import templates
from yochameleon.model.decoding import answer_prompts, left_pad

DEFAULT_QUESTION = templates.RECOGNITION_QUESTIONS[0]

_YES = re.compile(r"\byes\b", re.I)
_NO = re.compile(r"\bno\b", re.I)
_NEGATION = re.compile(r"\b(not|cannot|can't|isn't|doesn't|don't|nowhere)\b", re.I)


def yes_no_ids(tokenizer, layout=None) -> tuple[int, int]:
    """First token of "Yes" and of "No" (our answers all start with one of these words), as the chat
    `layout` writes an answer (Janus: " Yes")."""
    def first(word: str) -> int:
        return tokenizer(layout.answer_text(word) if layout else word, add_special_tokens=False)["input_ids"][0]

    yes, no = first("Yes"), first("No")
    if yes == no:
        raise ValueError("the tokenizer maps 'Yes' and 'No' to the same first token; recognition cannot be scored")
    return yes, no


def p_yes(logits: torch.Tensor, yes: int, no: int) -> torch.Tensor:
    """P(Yes) / (P(Yes) + P(No)) for each row of next-token logits (rows, vocab)."""
    return torch.softmax(logits[:, [yes, no]].float(), dim=-1)[:, 0]


def says_yes(p: torch.Tensor) -> torch.Tensor:
    """The verdict at the 0.5 threshold: Yes where P(Yes) > 0.5."""
    return p > 0.5


@torch.no_grad()
def yes_probabilities(model, builder, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 8,
                      flip: bool = False, self_prompt: str = "forced") -> torch.Tensor:
    """P(Yes) / (P(Yes) + P(No)) for each image, after the self-prompt group (forced or emitted) when it is on."""
    yes, no = yes_no_ids(builder.backbone.tokenizer, builder.layout)
    device = builder.backbone.device
    scores = []
    for start in range(0, len(images), batch_size):
        prompts = [builder.prompt_ids(question, image, flip) for image in images[start:start + batch_size]]
        prompts = answer_prompts(model, builder, prompts, "recognition", self_prompt)
        ids, mask = left_pad(prompts, builder.backbone.tokenizer.pad_token_id)
        scores.append(p_yes(model.last_logits(ids.to(device), mask.to(device)), yes, no).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def recognition_accuracy(p_yes_positives: torch.Tensor, p_yes_negatives: torch.Tensor) -> dict:
    """Positive, negative and weighted (0.5 pos + 0.5 neg) accuracy at the 0.5 threshold, and AUROC.

    The accuracies are the Yo'LLaVA protocol. AUROC (P(Yes) of positives ranked above negatives;
    0.5 is chance) does not depend on the threshold: an adapter that ranks every positive above
    every negative but answers No to all of them scores weighted 0.5 and AUROC 1.0.
    """
    from torchmetrics.functional.classification import binary_auroc

    pos = float(says_yes(p_yes_positives).float().mean()) if len(p_yes_positives) else float("nan")
    neg = float((p_yes_negatives <= 0.5).float().mean()) if len(p_yes_negatives) else float("nan")
    auroc = float("nan")
    if len(p_yes_positives) and len(p_yes_negatives):
        scores = torch.cat([p_yes_positives, p_yes_negatives]).float()
        truth = torch.cat([torch.ones(len(p_yes_positives)), torch.zeros(len(p_yes_negatives))]).long()
        auroc = float(binary_auroc(scores, truth))
    return {"positive": pos, "negative": neg, "weighted": 0.5 * pos + 0.5 * neg, "auroc": auroc}


def recognition_metrics(model, builder, split, batch_size: int = 8, prefix: str = "eval") -> dict:
    """Recognition on one split (an `EvalSplit`: positives, negatives, name, heldout), keys `<prefix>/...`.

    `<prefix>/recognition/*` scores after the forced self-prompt group; under self-prompting
    `<prefix>/recognition_emitted/*` scores after the group the model emits itself. Each holds
    `recognition_accuracy`'s figures and the mean P(Yes) of positives and of negatives.
    """
    metrics = {f"{prefix}/split": split.name, f"{prefix}/split_is_heldout": float(split.heldout)}
    for mode, name in (("forced", f"{prefix}/recognition"), ("emitted", f"{prefix}/recognition_emitted")):
        if mode == "emitted" and not builder.answer_prefix("recognition"):
            break  # no token group to emit: the emitted score would repeat the forced one
        p_pos = yes_probabilities(model, builder, split.positives, batch_size=batch_size, self_prompt=mode)
        p_neg = yes_probabilities(model, builder, split.negatives, batch_size=batch_size, self_prompt=mode)
        metrics |= {f"{name}/{k}": v for k, v in recognition_accuracy(p_pos, p_neg).items()}
        metrics |= {f"{name}/mean_p_yes_positive": float(p_pos.mean()),
                    f"{name}/mean_p_yes_negative": float(p_neg.mean())}
    return metrics


def parse_yes_no(text: str) -> str | None:
    """'yes', 'no' or None for a free answer.

    Whole words only: "I know <sks>" is not a "no" (the official Yo'LLaVA script counts an answer
    as No when it merely contains the letters "no"). The earlier of the words wins; without
    either, a negation ("not", "cannot", ...) means no; anything else is unparsable (counted wrong).
    """
    yes, no = _YES.search(text), _NO.search(text)
    if yes and (not no or yes.start() < no.start()):
        return "yes"
    if no:
        return "no"
    return "no" if _NEGATION.search(text) else None


def free_answer_accuracy(positive_answers: list[str], negative_answers: list[str]) -> dict:
    """Positive, negative and weighted accuracy of parsed free answers, and how many did not parse."""
    verdicts = [parse_yes_no(t) for t in [*positive_answers, *negative_answers]]
    pos = [v == "yes" for v in verdicts[:len(positive_answers)]]
    neg = [v == "no" for v in verdicts[len(positive_answers):]]
    result = {"positive": _mean(pos), "negative": _mean(neg)}
    result["weighted"] = 0.5 * result["positive"] + 0.5 * result["negative"]
    result["unparsed"] = sum(v is None for v in verdicts)
    return result


def _mean(values) -> float:
    return sum(values) / len(values) if values else float("nan")


@torch.no_grad()
def free_answers(model, builder, images, question: str = DEFAULT_QUESTION, self_prompt: str = "forced",
                 max_new_tokens: int = 12, batch_size: int = 8) -> list[str]:
    """Greedy answers to `question` about each image (identifiers shown as `<name>`), for `free_answer_accuracy`."""
    from yochameleon.model.personalized import decode_text

    backbone = builder.backbone
    banned = backbone.text_banned_ids(allow=[int(c.token_ids[0]) for c in builder.concepts if len(c.token_ids)])
    texts = []
    for start in range(0, len(images), batch_size):
        prompts = [builder.prompt_ids(question, image) for image in images[start:start + batch_size]]
        prompts = answer_prompts(model, builder, prompts, "recognition", self_prompt)
        ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
        out = model.generate_text(ids.to(backbone.device), mask.to(backbone.device), max_new_tokens, banned,
                                  backbone.text_stop_ids())
        learned = [c for c in builder.concepts if len(c.token_ids)]  # baselines introduce subjects by text
        texts += [decode_text(backbone, learned, o) for o in out]
    return texts
