"""Helper code that specc writes into the model files of causal language models (read as text by
specc/backends/torch/kvcache.py; the imports above the first definition are the emitted file's own)."""
import torch


class KVCache:
    """The keys and values a causal model has computed so far, one pair per self-attention, so that each generated
    token runs the model on that one new position (Hugging Face's past_key_values, nanoGPT's missing piece).

    Pass it to the model's forward as `cache=`: the forward's tokens are the positions from `start` on, each
    self-attention stores its keys and values after the cached ones (`update`, in the order the layers run) and
    attends to all of them, and the forward ends with `advance`. Room for `max_len` positions is allocated on first
    use. A cache serves one batch of sequences; make a new one for the next batch."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.start = 0  # positions cached before the current forward: the position of its first token
        self.keys: list[torch.Tensor] = []  # per self-attention [B, H, max_len, d]
        self.values: list[torch.Tensor] = []
        self.layer = 0  # the self-attention the next update() serves

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this forward's keys and values [B, H, T, d] after the cached ones; returns all of them
        [B, H, start + T, d]."""
        end = self.start + k.size(-2)
        if end > self.max_len:
            raise ValueError(f"KVCache has room for {self.max_len} positions: {self.start} cached and "
                             f"{k.size(-2)} new ones do not fit")
        if self.layer == len(self.keys):
            self.keys.append(k.new_zeros(*k.shape[:-2], self.max_len, k.size(-1)))
            self.values.append(v.new_zeros(*v.shape[:-2], self.max_len, v.size(-1)))
        keys, values = self.keys[self.layer], self.values[self.layer]
        self.layer += 1
        keys[..., self.start:end, :] = k
        values[..., self.start:end, :] = v
        return keys[..., :end, :], values[..., :end, :]

    def causal_mask(self, q: torch.Tensor, k: torch.Tensor, window: int | None = None) -> torch.Tensor | None:
        """[T, S] bool, true where query t (position start + t) may see key s: s <= start + t, and with a sliding
        window s > start + t - window. None for one query without a window: it sees every cached key."""
        if q.size(-2) == 1 and window is None:
            return None
        rows = torch.arange(self.start, self.start + q.size(-2), device=q.device)[:, None]
        cols = torch.arange(k.size(-2), device=q.device)
        return (cols <= rows) if window is None else (cols <= rows) & (cols > rows - window)

    def advance(self, n: int) -> None:
        """The forward's n positions are cached: the next forward starts after them."""
        self.start += n
        self.layer = 0


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row [B, 1] from next-token logits [B, V]: the most likely one when temperature is 0, else a
    sample of softmax(logits / temperature), restricted to the top_k most likely tokens and then to the smallest set
    whose probability reaches top_p (nucleus sampling), drawn with `generator`."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass before this token already reaches top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(outside, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


def generate_tokens(model: torch.nn.Module, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, eos_token: int | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """tokens [B, T] followed by up to max_new_tokens tokens chosen by next_token: [B, T + n]. The prompt runs
    once, then each new token alone, on a KVCache. A row that produces eos_token is finished and padded with
    eos_token; generation stops when every row is finished or after max_new_tokens."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: the most likely token), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if max_new_tokens == 0:
        return tokens
    cache = KVCache(tokens.size(1) + max_new_tokens - 1)  # the last new token is never run
    logits = model(tokens, cache)[:, -1]  # [B, V]; the cache is the forward's argument after the tokens
    finished = torch.zeros(tokens.size(0), dtype=torch.bool, device=tokens.device)
    out = [tokens]
    for step in range(max_new_tokens):
        token = next_token(logits, temperature, top_k, top_p, generator).to(tokens.dtype)  # [B, 1]
        if eos_token is not None:
            token = token.masked_fill(finished[:, None], eos_token)
            finished |= token[:, 0] == eos_token
        out.append(token)
        if step + 1 == max_new_tokens or (eos_token is not None and bool(finished.all())):
            break
        logits = model(token, cache)[:, -1]
    return torch.cat(out, dim=1)
