"""Hand-written PyTorch reference implementations of sequence / attention models.

Written independently of the ``specc`` compiler; the tests use them as ground
truth for the modules it emits.  Every model is configurable so that tests can
build tiny versions; the defaults reproduce the published sizes.

Models and the layouts they follow:

* ``LSTMLM`` -- Zaremba et al. 2014, "Recurrent Neural Network
  Regularization" (the "medium" PTB model): embedding vocab->650, a 2-layer
  ``nn.LSTM`` (batch_first), linear 650->vocab.  19,780,400 parameters for a
  10,000-word vocabulary.
* ``GRULM``  -- the same language model with ``nn.GRU``: 18,087,800.
* ``GPT2``   -- Radford et al. 2019, "Language Models are Unsupervised Multitask
  Learners", in the nanoGPT layout (wte, wpe, h.N.{ln_1, attn.c_attn,
  attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_f, lm_head tied to wte, biases
  on, GELU(tanh) MLP, causal ``F.scaled_dot_product_attention``).  GPT-2 small:
  124,439,808 parameters (tied weight counted once, 1024 positions).
* ``BertModel`` -- Devlin et al. 2018, "BERT", base encoder with the structure
  of Hugging Face's ``BertModel`` (parameter names simplified):
  word/position/token-type embeddings + LayerNorm, 12 post-LN encoder
  layers (GELU(erf) FFN), pooler = dense + tanh on the [CLS] token.
  109,482,240 parameters (vocab 30522, 512 positions, 2 token types).
* ``ViT``    -- Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words",
  ViT-B/16 with the structure of ``torchvision.models.vit_b_16`` (q/k/v kept
  as separate linears instead of a fused in_proj): conv patch embedding (16x16, stride 16),
  class token, learned position embedding (197 = 14*14 + 1), 12 pre-LN encoder
  layers (GELU MLP), final LayerNorm, linear head.  86,567,656 parameters.
* ``Transformer`` -- Vaswani et al. 2017, "Attention Is All You Need", base
  model: d_model 512, 8 heads, 6 encoder + 6 decoder post-LN layers, FFN 2048,
  ONE 37000-token embedding shared by source, target and the bias-free output
  projection, sinusoidal positions, embeddings scaled by sqrt(d_model), final
  encoder and decoder LayerNorms (as in ``nn.Transformer``).  63,084,544.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GPT2",
    "GRULM",
    "LSTMLM",
    "BertConfig",
    "BertModel",
    "GPT2Config",
    "Transformer",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
]


# --------------------------------------------------------------------------- #
# Recurrent language models
# --------------------------------------------------------------------------- #
class LSTMLM(nn.Module):
    """Embedding -> multi-layer LSTM (batch_first) -> linear decoder.

    ``forward(idx, hidden=None) -> (logits, hidden)`` with ``idx`` of shape
    (B, T), logits (B, T, vocab_size) and ``hidden = (h, c)`` each
    (num_layers, B, hidden_size).
    """

    def __init__(self, vocab_size: int = 10000, hidden_size: int = 650,
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers,
                           batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: torch.Tensor, hidden=None):
        x = self.drop(self.embedding(idx))
        out, hidden = self.rnn(x, hidden)
        return self.decoder(self.drop(out)), hidden


class GRULM(nn.Module):
    """Embedding -> multi-layer GRU (batch_first) -> linear decoder.

    ``forward(idx, hidden=None) -> (logits, hidden)``, hidden of shape
    (num_layers, B, hidden_size).
    """

    def __init__(self, vocab_size: int = 10000, hidden_size: int = 650,
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.GRU(hidden_size, hidden_size, num_layers=num_layers,
                          batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: torch.Tensor, hidden=None):
        x = self.drop(self.embedding(idx))
        out, hidden = self.rnn(x, hidden)
        return self.decoder(self.drop(out)), hidden


# --------------------------------------------------------------------------- #
# GPT-2 (nanoGPT style)
# --------------------------------------------------------------------------- #
@dataclass
class GPT2Config:
    vocab_size: int = 50257
    block_size: int = 1024  # context length == number of learned positions
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class GPT2CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hd = C // self.n_head
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None,
            dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class GPT2Block(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)); x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = GPT2CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = GPT2MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2(nn.Module):
    """GPT-2 language model.  ``forward(idx) -> logits`` of shape (B, T, vocab)."""

    def __init__(self, config: GPT2Config | None = None):
        super().__init__()
        config = config or GPT2Config()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "wpe": nn.Embedding(config.block_size, config.n_embd),
            "drop": nn.Dropout(config.dropout),
            "h": nn.ModuleList([GPT2Block(config) for _ in range(config.n_layer)]),
            "ln_f": nn.LayerNorm(config.n_embd, bias=config.bias),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output projection *is* the token embedding.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        assert T <= self.config.block_size, f"sequence length {T} > block_size"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x)


# --------------------------------------------------------------------------- #
# BERT encoder with pooler (Hugging Face structure)
# --------------------------------------------------------------------------- #
@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        pos = torch.arange(T, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids)
             + self.position_embeddings(pos)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        assert config.hidden_size % config.num_attention_heads == 0
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q = self._split(self.query(x))
        k = self._split(self.key(x))
        v = self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        if additive_mask is not None:
            scores = scores + additive_mask
        probs = self.dropout(scores.softmax(dim=-1))
        ctx = probs @ v  # (B, nh, T, hd)
        return ctx.transpose(1, 2).reshape(B, T, C)


class BertLayer(nn.Module):
    """Post-LN encoder layer: LN(x + attn(x)); LN(h + FFN(h))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H, I = config.hidden_size, config.intermediate_size
        self.attention = BertSelfAttention(config)
        self.attention_output = nn.Linear(H, H)
        self.attention_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(H, I)
        self.output = nn.Linear(I, H)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.output_LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attention_output(self.attention(x, additive_mask))
        x = self.attention_LayerNorm(x + self.attention_dropout(a))
        f = self.output(F.gelu(self.intermediate(x)))  # exact (erf) GELU
        return self.output_LayerNorm(x + self.output_dropout(f))


class BertModel(nn.Module):
    """BERT encoder + pooler.

    ``forward(input_ids, token_type_ids=None, attention_mask=None)`` returns
    ``(sequence_output, pooled_output)`` with shapes (B, T, H) and (B, H).
    ``attention_mask`` is (B, T) with 1 for real tokens and 0 for padding.
    """

    def __init__(self, config: BertConfig | None = None):
        super().__init__()
        config = config or BertConfig()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)

        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embeddings(input_ids, token_type_ids)
        additive_mask = None
        if attention_mask is not None:
            # (B, T) -> (B, 1, 1, T); masked keys get a large negative score.
            m = attention_mask[:, None, None, :].to(x.dtype)
            additive_mask = (1.0 - m) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, additive_mask)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


# --------------------------------------------------------------------------- #
# Vision Transformer (ViT-B/16, torchvision structure)
# --------------------------------------------------------------------------- #
@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    num_classes: int = 1000
    dropout: float = 0.0
    layer_norm_eps: float = 1e-6


class ViTSelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (biases on)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        att = self.dropout(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, N, C)
        return self.out(y)


class ViTBlock(nn.Module):
    """Pre-LN encoder block: x + attn(ln_1(x)); x + mlp(ln_2(x))."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        D = config.hidden_dim
        self.ln_1 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.attn = ViTSelfAttention(D, config.num_heads, config.dropout)
        self.ln_2 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(D, config.mlp_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.mlp_dim, D),
            nn.Dropout(config.dropout),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_1(x)))
        x = x + self.mlp(self.ln_2(x))
        return x


class ViT(nn.Module):
    """Vision Transformer classifier.  ``forward(images) -> logits`` (B, num_classes)."""

    def __init__(self, config: ViTConfig | None = None):
        super().__init__()
        config = config or ViTConfig()
        assert config.image_size % config.patch_size == 0
        self.config = config
        D = config.hidden_dim
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.conv_proj = nn.Conv2d(config.in_channels, D,
                                   kernel_size=config.patch_size, stride=config.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embedding = nn.Parameter(torch.empty(1, self.num_patches + 1, D))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([ViTBlock(config) for _ in range(config.num_layers)])
        self.ln = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.head = nn.Linear(D, config.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B = images.shape[0]
        x = self.conv_proj(images)  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order
        cls = self.class_token.expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embedding
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x)
        x = self.ln(x)
        return self.head(x[:, 0])


# --------------------------------------------------------------------------- #
# Transformer-base (Vaswani et al. 2017)
# --------------------------------------------------------------------------- #
@dataclass
class TransformerConfig:
    vocab_size: int = 37000  # shared source/target BPE vocabulary
    d_model: int = 512
    n_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.0
    max_len: int = 5000  # length of the (parameter-free) sinusoidal table
    layer_norm_eps: float = 1e-5


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return pe


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with q/k/v/o projections (biases on)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` is boolean, broadcastable to (B, h, Tq, Tk); True = may attend."""
        B, Tq, C = query.shape
        Tk = key.shape[1]
        q = self.w_q(query).view(B, Tq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.w_k(key).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.w_v(value).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = self.dropout(scores.softmax(dim=-1))
        y = (attn @ v).transpose(1, 2).reshape(B, Tq, C)
        return self.w_o(y)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class EncoderLayer(nn.Module):
    """Post-LN: x = LN(x + SelfAttn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, src_mask)))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return x


class DecoderLayer(nn.Module):
    """Post-LN: masked self-attn, cross-attn over the memory, FFN; each + LN."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.norm3 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                tgt_mask: torch.Tensor | None, memory_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, tgt_mask)))
        x = self.norm2(x + self.dropout(self.cross_attn(x, memory, memory, memory_mask)))
        x = self.norm3(x + self.dropout(self.ffn(x)))
        return x


class Transformer(nn.Module):
    """Encoder-decoder Transformer with one shared embedding matrix.

    ``forward(src, tgt, src_padding_mask=None) -> logits`` with ``src`` (B, S)
    and ``tgt`` (B, T) token ids; logits (B, T, vocab_size).  The decoder
    self-attention is causal.  ``src_padding_mask`` is (B, S) boolean, True at
    padding positions (which are then excluded from encoder self-attention and
    decoder cross-attention).
    """

    def __init__(self, config: TransformerConfig | None = None):
        super().__init__()
        cfg = config or TransformerConfig()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=cfg.d_model ** -0.5)
        self.register_buffer("pe", sinusoidal_positions(cfg.max_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder_layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers)])
        self.encoder_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.decoder_layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)])
        self.decoder_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        # Output projection shares the embedding matrix and has no bias.
        self.generator = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.generator.weight = self.embedding.weight

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        x = self.embedding(tokens) * math.sqrt(self.config.d_model) + self.pe[:T]
        return self.dropout(x)

    def encode(self, src: torch.Tensor, src_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = None if src_padding_mask is None else ~src_padding_mask[:, None, None, :]
        x = self.embed(src)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return self.encoder_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor,
               src_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        T = tgt.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).tril()
        memory_mask = None if src_padding_mask is None else ~src_padding_mask[:, None, None, :]
        x = self.embed(tgt)
        for layer in self.decoder_layers:
            x = layer(x, memory, causal, memory_mask)
        return self.decoder_norm(x)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor,
                src_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        memory = self.encode(src, src_padding_mask)
        return self.generator(self.decode(tgt, memory, src_padding_mask))
