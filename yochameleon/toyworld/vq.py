"""Stage 1 of the toy build: the VQ image tokenizer, and images encoded by it.

The Chameleon encoder plus the Anole-layout decoder, 64x64 -> 8x8 codes from a 512-entry
codebook, trained to reconstruct world images with object pixels weighed up and an attribute
probe on the quantized latents, so the codes carry what captions and concepts are about.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from yochameleon.toyworld import world
from yochameleon.toyworld.spec import to_pixels


class AttributeProbe(torch.nn.Module):
    """Reads each position slot's (shape, colour, pattern) from quantized latents; 'none' if empty.

    Trained with the tokenizer (and thrown away): reconstruction alone lets the 8x8 codes
    drift to background and lighting while colour and shape blur (measured: a linear probe
    on the codes read colour 0.23 and shape 0.24, near chance), and then no language model
    on top can tell an orange heart from a red one. The probe's loss flows through the
    straight-through quantizer into the encoder, so the codes must carry the attributes.
    """

    SIZES = tuple(len(world.ATTRIBUTE_VALUES[a]) + 1 for a in world.ATTRIBUTES)

    def __init__(self, embed_dim: int, side: int):
        super().__init__()
        self.linear = torch.nn.Linear(embed_dim * side * side, len(world.POSITIONS) * sum(self.SIZES))

    @staticmethod
    def targets(scenes) -> torch.Tensor:
        """(B, slots, 3) class ids; the last class of each attribute means 'no thing here'."""
        values = [world.ATTRIBUTE_VALUES[a] for a in world.ATTRIBUTES]
        out = torch.tensor([len(v) for v in values]).repeat(len(scenes), len(world.POSITIONS), 1)
        for row, scene in enumerate(scenes):
            for thing in scene.things:
                slot = world.POSITIONS.index(thing.position)
                out[row, slot] = torch.tensor([v.index(getattr(thing, a)) for v, a in zip(values, world.ATTRIBUTES)])
        return out

    def loss(self, quant: torch.Tensor, scenes) -> torch.Tensor:
        logits = self.linear(quant.flatten(1)).view(len(scenes), len(world.POSITIONS), -1)
        target = self.targets(scenes)
        parts = logits.split(list(self.SIZES), dim=-1)
        return sum(F.cross_entropy(part.reshape(-1, part.shape[-1]), target[..., i].flatten())
                   for i, part in enumerate(parts))


def train_vq(model, seed: int, steps: int, batch: int, object_weight: float = 0.0,
             attribute_weight: float = 0.0, progress=None) -> dict:
    """Train encoder, codebook and decoder to reconstruct world images; returns figures.

    Object pixels weigh `1 + object_weight` in the reconstruction loss (the things, not the
    backgrounds, are what captions and concepts are about), and an `AttributeProbe` on the
    quantized latents adds `attribute_weight` x its loss.
    """
    vq = model.model.vqmodel
    vq.train()
    params = [p for name, p in vq.named_parameters()]
    for p in params:
        p.requires_grad_(True)
    side = vq.config.resolution // 2 ** (len(vq.config.channel_multiplier) - 1)
    probe = AttributeProbe(vq.config.embed_dim, side)
    optimizer = torch.optim.Adam(params + list(probe.parameters()), lr=2e-3)
    rng = random.Random(seed + 1)
    usage = torch.zeros(vq.quantize.num_embeddings)
    history, probe_history = [], []
    for step in range(steps):
        scenes = [world.random_scene(rng) for _ in range(batch)]
        pixels = to_pixels([world.render(s) for s in scenes])
        latent = vq.quant_conv(vq.encoder(pixels))
        if step == 0:  # start the codebook on real latents (no dead codes at the start)
            with torch.no_grad():
                flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
                pick = torch.randint(0, len(flat), (vq.quantize.num_embeddings,), generator=torch.Generator().manual_seed(seed))
                vq.quantize.embedding.weight.copy_(flat[pick])
        quant, codebook_loss, codes = vq.quantize(latent)
        recon = vq.decoder(vq.post_quant_conv(quant))
        weight = 1 + object_weight * torch.from_numpy(np.stack([world.object_mask(s, pixels.shape[-1]) for s in scenes]))
        loss = ((recon - pixels) ** 2 * weight.unsqueeze(1)).sum() / (weight.sum() * 3) + codebook_loss
        if attribute_weight:
            probe_loss = probe.loss(quant, scenes)
            loss = loss + attribute_weight * probe_loss
            probe_history.append(float(probe_loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        usage += torch.bincount(codes.flatten(), minlength=len(usage)).float()
        if (step + 1) % 50 == 0 and step < 0.8 * steps:  # re-seed codes unused in the last window on latents
            with torch.no_grad():
                dead = (usage == 0).nonzero().flatten()
                if len(dead):
                    flat = latent.detach().permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
                    vq.quantize.embedding.weight[dead] = flat[torch.randint(0, len(flat), (len(dead),))]
            usage.zero_()
        history.append(float(F.mse_loss(recon.detach(), pixels)))
        if progress is not None:
            progress(step, float(loss.detach()))
    vq.eval()
    for p in params:
        p.requires_grad_(False)
    report = {"vq_mse_first": float(np.mean(history[:20])), "vq_mse_last": float(np.mean(history[-20:]))}
    if probe_history:
        report["vq_probe_loss_last"] = float(np.mean(probe_history[-20:]))
    return report


@torch.no_grad()
def encode(model, images) -> torch.Tensor:
    """Images -> VQ codes (B, 64)."""
    vq = model.model.vqmodel
    latent = vq.quant_conv(vq.encoder(to_pixels(images)))
    _, _, codes = vq.quantize(latent)
    return codes.view(len(images), -1)
