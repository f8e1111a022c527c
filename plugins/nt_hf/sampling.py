"""Top-k then top-p (nucleus) sampling as one transformers logits processor, fast on a CPU.

transformers' own warpers sort the whole vocabulary and ``generate`` then draws from all of it: on 2 CPU cores
with SmolLM2's 49,152-token vocabulary that is 65 ms (sort) + 36 ms (multinomial) a step at batch 32, more
than the model's own forward (benchmarks/embedded_generation.py). Here the top k come from ``topk``, the
nucleus is cut among them and the draw is over k tokens; the processor then leaves only the drawn token
standing, so ``generate`` runs greedy (argmax) and keeps the draw. The distribution is exactly that of
transformers' ``top_k=k, top_p=p`` (top-p over the renormalised top k); with top_k 0 (no cut) k is the whole
vocabulary, exact and as slow as transformers.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class NucleusSampler(LogitsProcessor):
    def __init__(self, temperature: float, top_p: float, top_k: int, seed: int):
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.generator = torch.Generator().manual_seed(seed)

    def candidates(self, scores: torch.FloatTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, token ids) of the top k per row, the tokens outside the nucleus at probability 0."""
        k = scores.shape[-1] if self.top_k <= 0 else min(self.top_k, scores.shape[-1])
        values, indices = scores.float().topk(k, dim=-1)  # descending
        probs = (values / self.temperature).softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens: keep while it is below top_p
        probs = probs.masked_fill(before >= self.top_p, 0.0)
        return probs / probs.sum(-1, keepdim=True), indices

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs, indices = self.candidates(scores)
        drawn = torch.multinomial(probs.cpu(), 1, generator=self.generator).to(indices.device)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, indices.gather(-1, drawn), 0.0)
