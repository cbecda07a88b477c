"""Soft prompt decoders: prompts cross-attend to the encoder's token states.

A decoder layer is a post-LN ``nn.TransformerDecoderLayer`` without self-attention:
the l prompt vectors query the document's token states T (padding masked), then a
ReLU feed-forward; each sub-layer has a residual connection and LayerNorm. The
prompts never attend to each other, so each prompt vector is a learned "view" of
the document, and the document vector is their mean.

* ``SPDDecoder``: N independent layers (paper default N = 6).
* ``UTSPDDecoder``: one layer applied N times (universal transformer, paper
  Table 4, default N = 12) with a learned temporal embedding τ_n (l x d) added to
  the block's output after step n (paper), so the next application of the shared
  block knows which step it is at.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CrossAttentionLayer(nn.Module):
    """Cross-attention + FFN, each with residual and post-LayerNorm."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by num_heads={num_heads}; "
                             f"choose num_heads dividing {hidden_size} (e.g. 6, 8 or 12 for 384)")
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden_size, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, l, d) queries; memory: (B, n, d) token states; mask: (B, n) True = padding."""
        attn, _ = self.cross_attn(x, memory, memory, key_padding_mask=memory_padding_mask, need_weights=False)
        x = self.norm1(x + self.dropout1(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ff))


def _xavier_(module: nn.Module) -> None:
    """Xavier-uniform every weight matrix (paper), zero biases, unit LayerNorms."""
    for name, p in module.named_parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


class SPDDecoder(nn.Module):
    """N stacked cross-attention layers; output = mean over the l output vectors."""

    def __init__(self, hidden_size: int, num_layers: int = 6, num_heads: int = 8, ffn_dim: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        if num_layers < 1:
            raise ValueError("decoder needs at least one layer")
        ffn_dim = ffn_dim or 4 * hidden_size
        self.layers = nn.ModuleList(
            CrossAttentionLayer(hidden_size, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        _xavier_(self)
        for layer in self.layers:  # LayerNorm weights are 1-D "weight": keep them at 1
            layer.norm1.reset_parameters()
            layer.norm2.reset_parameters()

    def forward(self, prompts: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = prompts
        for layer in self.layers:
            x = layer(x, memory, memory_padding_mask)
        return x.mean(dim=1)


class UTSPDDecoder(nn.Module):
    """One shared cross-attention layer applied ``num_steps`` times, τ_n added after application n."""

    def __init__(self, hidden_size: int, prompt_length: int, num_steps: int = 12, num_heads: int = 8,
                 ffn_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        if num_steps < 1:
            raise ValueError("decoder needs at least one step")
        ffn_dim = ffn_dim or 4 * hidden_size
        self.num_steps = num_steps
        self.block = CrossAttentionLayer(hidden_size, num_heads, ffn_dim, dropout)
        self.temporal = nn.Parameter(torch.empty(num_steps, prompt_length, hidden_size))  # τ_1..τ_N
        _xavier_(self.block)
        self.block.norm1.reset_parameters()
        self.block.norm2.reset_parameters()
        for n in range(num_steps):  # each τ_n is an l x d matrix
            nn.init.xavier_uniform_(self.temporal.data[n])

    def forward(self, prompts: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = prompts
        for n in range(self.num_steps):
            x = self.block(x, memory, memory_padding_mask) + self.temporal[n].unsqueeze(0)
        return x.mean(dim=1)
