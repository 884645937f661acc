"""A shrunk encoder-decoder: target positions attend over the embedded source (one cross-attention layer)."""

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class TinySeq2SeqConfig:
    vocab_size: int = 32
    max_len: int = 16
    d_model: int = 32


class TinySeq2Seq(nn.Module):
    def __init__(self, config: TinySeq2SeqConfig = TinySeq2SeqConfig()):
        super().__init__()
        self.src_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.tgt_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.query = nn.Linear(config.d_model, config.d_model)
        self.head = nn.Linear(2 * config.d_model, config.vocab_size)

    def forward(self, src, tgt):
        memory = self.src_emb(src) + self.pos(torch.arange(src.shape[1], device=src.device))  # [B, S, D]
        x = self.tgt_emb(tgt) + self.pos(torch.arange(tgt.shape[1], device=tgt.device))  # [B, T, D]
        context = F.scaled_dot_product_attention(self.query(x), memory, memory)  # [B, T, D]
        return self.head(torch.cat([x, context], dim=-1))  # [B, T, V]

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())
