"""Hand-written GPT (nanoGPT style) for the graph tests: fused or separate q/k/v, SDPA or explicit softmax.

Same parameter order and shapes as Hugging Face GPT-2 except that linear weights are (out, in).
"""
import math, torch
import torch.nn.functional as F
from torch import nn

class Attn(nn.Module):
    def __init__(self, d, h, fused=True, sdpa=True, n_pos=5, split_by_shape=False):
        super().__init__()
        self.d, self.h, self.fused, self.sdpa, self.scale = d, h, fused, sdpa, 1.0 / math.sqrt(d // h)
        self.split_by_shape = split_by_shape  # split the fused projection by x.size(-1), a traced value
        if fused:
            self.c_attn = nn.Linear(d, 3 * d)
        else:
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.c_proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(n_pos, n_pos)).view(1, 1, n_pos, n_pos))

    def forward(self, x):
        B, T, C = x.size()
        if self.fused:
            q, k, v = self.c_attn(x).split(C if self.split_by_shape else self.d, dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(B, T, self.h, C // self.h).transpose(1, 2)
        k = k.view(B, T, self.h, C // self.h).transpose(1, 2)
        v = v.view(B, T, self.h, C // self.h).transpose(1, 2)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * self.scale
            att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)

class MLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))

class Block(nn.Module):
    def __init__(self, d, h, **kw):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(d), Attn(d, h, **kw), nn.LayerNorm(d), MLP(d)
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

class GPT(nn.Module):
    def __init__(self, vocab=11, n_pos=5, d=8, layers=2, heads=2, **kw):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_pos, d)
        self.h = nn.ModuleList([Block(d, heads, n_pos=n_pos, **kw) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
    def forward(self, idx):
        B, T = idx.size()
        x = self.wte(idx) + self.wpe(torch.arange(0, T, device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
