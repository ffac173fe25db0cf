"""A small vision transformer for Fashion-MNIST, written as ViTs are (Dosovitskiy et al., 2021).

Non-overlapping 4x4 patches embedded by a convolution (16 elements per kernel: more than a conv edge's 9 slots,
so the neural graph places it as a linear layer over each patch), a learned class token prepended and learned
position embeddings added (free-standing parameters), pre-norm ``nn.TransformerEncoderLayer`` blocks, a final
LayerNorm and a linear classifier on the class token.
"""
from __future__ import annotations

import torch
from torch import nn


class ViT(nn.Module):
    """Patch embedding, class token, position embeddings, ``depth`` pre-norm encoder layers, classifier.

    Args:
        image_size, patch, in_channels: input images are [B, in_channels, image_size, image_size]; patch divides
            image_size.
        width, depth, heads, mlp: the encoder's model width, layers, attention heads and feed-forward width.
        num_classes: logits per image.
    """

    def __init__(self, image_size: int = 28, patch: int = 4, in_channels: int = 1, width: int = 32, depth: int = 2,
                 heads: int = 2, mlp: int = 64, num_classes: int = 10):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch {patch} does not divide image_size {image_size}")
        self.patch_embed = nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (image_size // patch) ** 2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] images -> [B, num_classes] logits."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, patches, width]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens))[:, 0])
