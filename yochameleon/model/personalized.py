"""A frozen backbone plus one or more concepts' trainable rows: one forward for training and inference.

Logits come from the frozen `lm_head` on hidden states (never from upstream
`ChameleonForConditionalGeneration.forward`, which sets every image-token logit
to the dtype minimum), with each concept's columns patched in. The loss is
computed only at target positions, so the 65536-wide head runs over a few
hundred rows instead of batch x length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from yochameleon.errors import TokenLayoutError

IGNORE_INDEX = -100


class PersonalizedChameleon(nn.Module):
    """Frozen backbone + `PersonalizedTokens` modules (`concept/tokens.py`: only those have parameters that train;
    any module with `token_ids`, `input_rows` and `output_rows` serves, so model/ imports nothing of concept/)."""

    def __init__(self, backbone_model, concepts: list, length_group_ratio: float = 0.5,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.backbone = backbone_model
        self.concepts = nn.ModuleList(concepts)
        self.length_group_ratio = length_group_ratio  # see `length_groups`; 0 pads the whole batch together
        if gradient_checkpointing:
            enable_gradient_checkpointing(backbone_model)
        ids = [int(i) for c in concepts for i in c.token_ids]
        if len(ids) != len(set(ids)):
            raise TokenLayoutError("two loaded concepts use the same token ids; load them with remapping")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with every concept's rows injected."""
        embeds = self.backbone.token_embeddings(input_ids)
        for concept in self.concepts:
            embeds = concept(input_ids=input_ids, embeds=embeds)
        return embeds

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, cache=None,
                      use_cache: bool = False):
        """Last hidden states (B, T, hidden) and the KV cache (a transformers `Cache`, e.g. `DynamicCache`)."""
        # The pinned transformers names the cache `cache`; `past_key_values` (argument or output
        # attribute) still works but logs a deprecation warning on every forward.
        out = self.backbone.model(
            inputs_embeds=self.embed(input_ids), attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over every id the backbone predicts (image tokens included) for the given hidden states."""
        logits = self.backbone.vocab_logits(hidden)
        for concept in self.concepts:
            logits = concept(hidden=hidden, logits=logits)
        return logits

    def forward(self, input_ids, attention_mask, labels, weights=None) -> dict:
        """Next-token loss on `labels` != -100: mean per sample, then over the batch.

        `weights` (same shape as `labels`, optional) makes the per-sample mean a weighted one.

        Right-padded rows run in groups of similar length (`length_groups`), each cut to its own
        longest row, so a 40-token text question is not padded to a 1000-token image sample. The
        loss is the same; one backward covers every group (DDP and DeepSpeed see one step).
        """
        lengths = attention_mask.sum(1).tolist()
        right_padded = bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())
        if not (self.length_group_ratio and right_padded and len(lengths) > 1):
            return self._loss(input_ids, attention_mask, labels, weights)
        per_sample = torch.zeros(len(lengths), device=input_ids.device)
        for rows in length_groups(lengths, self.length_group_ratio):
            index = torch.tensor(rows, device=input_ids.device)
            n = max(lengths[r] for r in rows)
            part = self._loss(input_ids[index, :n], attention_mask[index, :n], labels[index, :n],
                              None if weights is None else weights[index, :n])["per_sample"]
            per_sample = per_sample.index_copy(0, index, part)
        return {"loss": per_sample.mean(), "per_sample": per_sample}

    def _loss(self, input_ids, attention_mask, labels, weights=None) -> dict:
        hidden, _ = self.hidden_states(input_ids, attention_mask)
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        picked = hidden[:, :-1][mask]  # (N, hidden) rows that predict a target
        token_loss = token_cross_entropy(self.logits(picked).float(), targets[mask], self.backbone.text_vocab_size)
        weight = mask.float() if weights is None else weights[:, 1:].to(token_loss.device).float() * mask
        sample_index = mask.nonzero()[:, 0]
        totals = weight.sum(1).clamp(min=1e-12)
        per_sample = torch.zeros(len(labels), device=token_loss.device).index_add(
            0, sample_index, token_loss * weight[mask])
        per_sample = per_sample / totals
        return {"loss": per_sample.mean(), "per_sample": per_sample}

    @torch.no_grad()
    def last_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits at the last position of left-padded prompts: (B, vocab)."""
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden, _ = self.hidden_states(input_ids, attention_mask, position_ids)
        return self.logits(hidden[:, -1])

    @torch.no_grad()
    def generate_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                      banned: torch.Tensor, stop_ids: list[int], temperature: float = 0.0,
                      generator: torch.Generator | None = None, progress=None) -> list[list[int]]:
        """Sample text after left-padded prompts with a KV cache; `banned` (vocab,) bool ids never appear."""
        cache = DynamicCache(config=self.backbone.config)
        mask = attention_mask
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden, cache = self.hidden_states(input_ids, mask, position_ids, cache, use_cache=True)
        finished = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        stops = torch.tensor(stop_ids, dtype=torch.long, device=input_ids.device)
        outputs: list[list[int]] = [[] for _ in range(len(input_ids))]
        for _ in range(max_new_tokens):
            logits = self.logits(hidden[:, -1]).float()
            logits = logits.masked_fill(banned.to(logits.device), float("-inf"))
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            else:
                next_ids = logits.argmax(-1)
            for row, token in enumerate(next_ids.tolist()):
                if not finished[row]:
                    outputs[row].append(token)
            finished |= torch.isin(next_ids, stops)
            if progress is not None:
                progress.update(1)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position_ids = position_ids[:, -1:] + 1
            hidden, cache = self.hidden_states(next_ids[:, None], mask, position_ids, cache, use_cache=True)
        return [[t for t in out if t not in stop_ids] for out in outputs]


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, split: int | None) -> torch.Tensor:
    """Per-target cross-entropy (N,). `split` None: one softmax over all columns (Chameleon, whose
    image tokens are vocabulary ids). Otherwise columns below `split` are the text head and those from
    it the image-generation head, each its own softmax (Janus): a target is scored within its own head."""
    if split is None:
        return F.cross_entropy(logits, targets, reduction="none")
    text = torch.logsumexp(logits[:, :split], dim=-1)
    image = torch.logsumexp(logits[:, split:], dim=-1)
    normaliser = torch.where(targets < split, text, image)
    return normaliser - logits.gather(1, targets[:, None]).squeeze(1)


def enable_gradient_checkpointing(backbone_model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of storing them.

    Non-reentrant checkpointing: gradients reach the concept rows through the frozen layers
    without forcing the (frozen) embedding output to require grad, so the input-grad hook that
    transformers adds for the reentrant variant is removed again. Only active in training mode.
    """
    backbone_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    backbone_model.disable_input_require_grads()


def length_groups(lengths: list[int], ratio: float) -> list[list[int]]:
    """Row indices grouped longest first: a row joins the current group while its length is at
    least `ratio` x the group's longest, so no row is padded to more than 1/ratio its length."""
    groups: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and lengths[row] >= ratio * lengths[groups[-1][0]]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def decode_text(backbone, concepts, ids: list[int]) -> str:
    """Token ids -> text, with identifiers shown as `<name>` and latent tokens dropped."""
    latent = {int(i) for c in concepts for i in c.token_ids[1:]}
    names = {int(c.token_ids[0]): f"<{c.name}>" for c in concepts}
    pieces, run = [], []
    for token in ids:
        if token in latent:
            continue
        if token in names:
            pieces += [backbone.tokenizer.decode(run), names[token]]
            run = []
        else:
            run.append(token)
    pieces.append(backbone.tokenizer.decode(run))
    return "".join(pieces).strip()
