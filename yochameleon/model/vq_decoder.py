"""VQ image decoder in the Anole-hf weight layout (`model.vqmodel.decoder.*`).

Upstream transformers ships only the VQ *encoder* of Chameleon. Anole checkpoints
also carry the taming-transformers decoder; this module mirrors that layout so
the weights load by name. Residual and attention blocks are the upstream
encoder's own classes, so the numerics match the encoder side exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)


class VQDecoderUpsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden, scale_factor=2.0, mode="nearest"))


class ChameleonVQDecoder(nn.Module):
    """Latent (B, latent_channels, h, w) -> pixels (B, 3, H, W) in [-1, 1] (roughly)."""

    def __init__(self, vq_config, out_channels: int = 3):
        super().__init__()
        mult = list(vq_config.channel_multiplier)
        self.num_resolutions = len(mult)
        self.num_res_blocks = vq_config.num_res_blocks
        base = vq_config.base_channels
        use_attn = vq_config.attn_type == "vanilla"
        attn_res = vq_config.attn_resolutions or []

        block_in = base * mult[-1]
        curr_res = vq_config.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(vq_config.latent_channels, block_in, kernel_size=3, stride=1, padding=1)

        self.mid = nn.Module()
        self.mid.block_1 = ChameleonVQVAEEncoderResnetBlock(vq_config, block_in, block_in)
        self.mid.attn_1 = ChameleonVQVAEEncoderAttnBlock(block_in) if use_attn else nn.Identity()
        self.mid.block_2 = ChameleonVQVAEEncoderResnetBlock(vq_config, block_in, block_in)

        # `up[i]` works at resolution level i (0 = full size), like the encoder's `down[i]`;
        # it is built and run from the deepest level upward.
        levels: list[nn.Module] = []
        for level in reversed(range(self.num_resolutions)):
            level_module = nn.Module()
            level_module.block = nn.ModuleList()
            level_module.attn = nn.ModuleList()
            block_out = base * mult[level]
            for _ in range(self.num_res_blocks + 1):
                level_module.block.append(ChameleonVQVAEEncoderResnetBlock(vq_config, block_in, block_out))
                block_in = block_out
                if use_attn and curr_res in attn_res:
                    level_module.attn.append(ChameleonVQVAEEncoderAttnBlock(block_in))
            if level != 0:
                level_module.upsample = VQDecoderUpsample(block_in)
                curr_res *= 2
            levels.insert(0, level_module)
        self.up = nn.ModuleList(levels)

        self.norm_out = nn.GroupNorm(num_groups=32, num_channels=block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode a post-quant-conv latent into pixels."""
        hidden = self.conv_in(latent)
        hidden = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hidden)))
        for level in reversed(range(self.num_resolutions)):
            up = self.up[level]
            for i, block in enumerate(up.block):
                hidden = block(hidden)
                if len(up.attn) > 0:
                    hidden = up.attn[i](hidden)
            if level != 0:
                hidden = up.upsample(hidden)
        hidden = self.norm_out(hidden)
        hidden = hidden * torch.sigmoid(hidden)
        return self.conv_out(hidden)
