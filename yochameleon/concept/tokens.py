"""The concept's personalized tokens and the only weights training touches.

A concept is `<sks>` (its identifier) plus `k_g` generation tokens and `k_u`
understanding tokens, all placed on reserved vocabulary ids so the tokenizer and
the embedding/output matrices never change size. Their input-embedding rows and
output-head rows live here as two small tensors; the backbone's own matrices
stay frozen and get neither gradients nor optimizer state.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from yochameleon.errors import TokenLayoutError  # noqa: F401  (defined in errors.py, importable from here)

RESERVED = re.compile(r"<reserved(\d+)>")


def reserved_token_names(vocabulary_map: dict[str, int], first: str, count: int) -> list[str]:
    """`count` consecutive reserved token names starting at `first` (e.g. <reserved16200>)."""
    match = RESERVED.fullmatch(first)
    if not match:
        raise TokenLayoutError(f"recipe.first_token={first!r} must look like <reservedNNNNN>")
    start, width = int(match.group(1)), len(match.group(1))
    names = [f"<reserved{start + i:0{width}d}>" for i in range(count)]
    missing = [n for n in names if n not in vocabulary_map]
    if missing:
        raise TokenLayoutError(
            f"the backbone's vocabulary has no {missing[0]} (needed {count} reserved tokens from {first}); "
            "choose another recipe.first_token")
    return names


class PersonalizedTokens(nn.Module):
    """Trainable rows for one concept: ids = [sks, g_1..g_kg, u_1..u_ku]."""

    def __init__(self, name: str, token_names: list[str], token_ids: list[int], k_g: int, k_u: int,
                 input_rows: torch.Tensor, output_rows: torch.Tensor, shared: bool = False):
        super().__init__()
        if len(token_ids) != 1 + k_g + k_u or len(token_names) != len(token_ids):
            raise TokenLayoutError(f"{len(token_ids)} token ids do not match 1 + k_g({k_g}) + k_u({k_u})")
        self.name, self.k_g, self.k_u = name, k_g, k_u
        # shared: one set of latent tokens serves every task (the "train on a mixture" baseline).
        self.shared = shared
        self.token_names = list(token_names)
        self.input_rows = nn.Parameter(input_rows.detach().clone().float())  # (n, hidden)
        self.output_rows = nn.Parameter(output_rows.detach().clone().float())  # (n, hidden)
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        # The self-prompt group before an image (recipe.generation_group: full, none or n g-tokens): a fact of
        # how these rows were trained, so every prompt built for them (training, inference, the harness) uses it.
        self.generation_group = "full"

    @classmethod
    def from_backbone(cls, model, vocabulary_map: dict[str, int], name: str, k_g: int, k_u: int,
                      first_token: str = "<reserved16200>", shared: bool = False) -> "PersonalizedTokens":
        """New tokens initialised from the backbone's current rows of those reserved ids."""
        names = reserved_token_names(vocabulary_map, first_token, 1 + k_g + k_u)
        ids = [int(vocabulary_map[n]) for n in names]
        index = torch.tensor(ids, device=model.lm_head.weight.device)
        return cls(name, names, ids, k_g, k_u,
                   model.get_input_embeddings().weight[index].float().cpu(),
                   model.lm_head.weight[index].float().cpu(), shared)

    # ---- the strings prompts are made of -------------------------------------------------
    @property
    def identifier(self) -> str:
        """The token string that stands for `<name>` in prompts."""
        return self.token_names[0]

    @property
    def g_tokens(self) -> str:
        return "".join(self.token_names[1:1 + self.k_g])

    def g_tokens_string(self, count: int) -> str:
        """The first `count` generation tokens as text (how a soft positive is named)."""
        return self.backbone_names(self.g_token_ids(count))

    def backbone_names(self, ids: list[int]) -> str:
        """Token strings for some of this concept's ids, concatenated."""
        by_id = dict(zip(self.token_ids.tolist(), self.token_names))
        return "".join(by_id[i] for i in ids)

    @property
    def u_tokens(self) -> str:
        return "".join(self.token_names[1 + self.k_g:])

    def g_token_ids(self, count: int | None = None) -> list[int]:
        """Ids of the first `count` generation tokens (all by default)."""
        ids = self.token_ids[1:].tolist() if self.shared else self.token_ids[1:1 + self.k_g].tolist()
        return ids if count is None else ids[:count]

    def g_positions(self) -> list[int]:
        """Where the generation tokens' rows are in `input_rows` / `output_rows` (every latent token's when shared):
        the rows follow the ids, identifier first."""
        return list(range(1, 1 + len(self.g_token_ids())))

    def u_token_ids(self) -> list[int]:
        """Ids of the understanding tokens (every latent token when shared)."""
        return self.token_ids[1:].tolist() if self.shared else self.token_ids[1 + self.k_g:].tolist()

    def system_prefix(self) -> str:
        """The soft prompt: `<sks> is <g-tokens><u-tokens>.`"""
        return f"{self.identifier} is {self.g_tokens}{self.u_tokens}."

    @torch.no_grad()
    def cap_input_norms(self, limit: float) -> None:
        """Scale every input row longer than `limit` back to that length (recipe.max_row_norm)."""
        norms = self.input_rows.norm(dim=-1, keepdim=True)
        self.input_rows.mul_(torch.where(norms > limit, limit / norms.clamp(min=1e-12), torch.ones_like(norms)))

    # ---- the math ---------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, embeds: torch.Tensor | None = None,
                hidden: torch.Tensor | None = None, logits: torch.Tensor | None = None) -> torch.Tensor:
        """`inject(input_ids, embeds)` or `patch_logits(hidden, logits)` through `nn.Module.__call__`.

        Callers go through here so that DeepSpeed ZeRO-3, which gathers a module's partitioned
        parameters in hooks around its forward, has the rows in place when they are read.
        """
        if input_ids is not None:
            return self.inject(input_ids, embeds)
        return self.patch_logits(hidden, logits)

    def inject(self, input_ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Replace the embeddings at this concept's ids with the trainable rows."""
        slot = _slots(input_ids, self.token_ids)  # (B, T), -1 where not ours
        mine = slot >= 0  # no early exit when empty: under DDP every trainable row must join the graph
        rows = self.input_rows.to(embeds.dtype)[slot.clamp(min=0)]  # (B, T, hidden)
        return torch.where(mine.unsqueeze(-1), rows, embeds)

    def patch_logits(self, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Overwrite this concept's logit columns with `hidden @ output_rows.T`."""
        ours = hidden @ self.output_rows.to(hidden.dtype).T  # (..., n)
        return logits.index_copy(-1, self.token_ids, ours.to(logits.dtype))


def _slots(input_ids: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """For each position, the index of its id within `token_ids`, or -1."""
    match = input_ids.unsqueeze(-1) == token_ids  # (B, T, n)
    return torch.where(match.any(-1), match.float().argmax(-1), torch.full_like(input_ids, -1))
