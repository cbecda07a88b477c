"""Language-specific soft prompts: decomposed (KD-SPD, section 3.2) or one full matrix per language.

prompt_k = P* ⊙ (u_k v_kᵀ): a shared matrix P* (l x d) holds what all languages
share, and a rank-one per-language factor (u_k in R^l, v_k in R^d) modulates it.
This costs l + d parameters per language instead of l*d, and gives a principled
prompt for a language never seen in training: the average of the trained u and of
the trained v (paper section 5.5), which this module exposes as an extra slot.

:class:`FullPrompts` is the ablation of that decomposition: one free l x d prompt per
language (l*d parameters each), started where the decomposed prompts start, so that a
comparison of the two measures the parametrisation alone.
"""
from __future__ import annotations

import torch
from torch import nn


class DecomposedPrompts(nn.Module):
    """K trained languages + one "average" slot (index K) for unseen languages.

    ``forward(lang_ids)`` returns (B, l, d) prompts. The average slot is computed
    from the current trained vectors on every call, so it stays the exact mean of
    u_1..u_K and v_1..v_K after training without being stored.

    Initialisation (from torch's global RNG, so ``torch.manual_seed`` fixes it): P* ~ N(0, ``init_std``²)
    and u_k, v_k ~ 1 + N(0, ``language_noise``²). Prompts then start at the scale of ``init_std`` (the
    student passes its encoder's word-embedding std, so prompts look like token embeddings to the
    decoder, as in prompt tuning; 0.02 is a fresh Hugging Face embedding's std), every language's prompt
    differs from the others by ~``language_noise`` relative, and the average slot starts near P* itself.
    Xavier-initialised u and v (mean 0, std ~0.02) would instead start every prompt at ~1e-3 and the
    average slot near 0.
    """

    def __init__(self, num_languages: int, prompt_length: int, hidden_size: int, init_std: float = 0.02,
                 language_noise: float = 0.05):
        super().__init__()
        if num_languages < 1:
            raise ValueError("DecomposedPrompts needs at least one language")
        if not init_std > 0 or language_noise < 0:
            raise ValueError(f"DecomposedPrompts needs init_std > 0 and language_noise >= 0, "
                             f"got {init_std} and {language_noise}")
        self.num_languages = num_languages
        self.prompt_length = prompt_length
        self.hidden_size = hidden_size
        self.init_std = float(init_std)
        self.language_noise = float(language_noise)
        self.shared = nn.Parameter(torch.empty(prompt_length, hidden_size))  # P*
        self.lang_u = nn.Parameter(torch.empty(num_languages, prompt_length))  # u_k rows
        self.lang_v = nn.Parameter(torch.empty(num_languages, hidden_size))  # v_k rows
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.shared, std=self.init_std)
        nn.init.normal_(self.lang_u, mean=1.0, std=self.language_noise)
        nn.init.normal_(self.lang_v, mean=1.0, std=self.language_noise)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K+1, l) u and (K+1, d) v, the last row being the average of the trained rows."""
        u = torch.cat([self.lang_u, self.lang_u.mean(dim=0, keepdim=True)], dim=0)
        v = torch.cat([self.lang_v, self.lang_v.mean(dim=0, keepdim=True)], dim=0)
        return u, v

    def prompt(self, index: int) -> torch.Tensor:
        """The (l, d) prompt of one language slot (K = average slot)."""
        return self.forward(torch.tensor([index], device=self.shared.device))[0]

    def forward(self, lang_ids: torch.Tensor) -> torch.Tensor:
        if lang_ids.dim() != 1:
            raise ValueError(f"lang_ids must be 1-D (batch,), got shape {tuple(lang_ids.shape)}")
        u, v = self.factors()
        u = u.index_select(0, lang_ids)  # (B, l)
        v = v.index_select(0, lang_ids)  # (B, d)
        return self.shared.unsqueeze(0) * (u.unsqueeze(2) * v.unsqueeze(1))


class FullPrompts(nn.Module):
    """K trained languages, each with its own free (l, d) prompt, + the "average" slot (index K).

    Initialised as :class:`DecomposedPrompts` with the same arguments would be, drawing the same numbers
    from torch's global RNG (prompt_k = P* ⊙ (u_k v_kᵀ) at step 0): under one seed a full-prompt student
    starts with the decomposed student's prompts and decoder, and only what training may change differs.
    The average slot is the mean of the trained prompts, computed on every call (at step 0 it differs from
    the decomposed average P* ⊙ (ū v̄ᵀ) by the product of the small language noises only).
    """

    def __init__(self, num_languages: int, prompt_length: int, hidden_size: int, init_std: float = 0.02,
                 language_noise: float = 0.05):
        super().__init__()
        self.num_languages = num_languages
        self.prompt_length = prompt_length
        self.hidden_size = hidden_size
        self.init_std = float(init_std)
        self.language_noise = float(language_noise)
        self.table = nn.Parameter(torch.empty(num_languages, prompt_length, hidden_size))  # prompt_1..prompt_K
        self.reset_parameters()

    def reset_parameters(self) -> None:
        start = DecomposedPrompts(self.num_languages, self.prompt_length, self.hidden_size, self.init_std,
                                  self.language_noise)  # validates the arguments, draws P*, u, v
        with torch.no_grad():
            self.table.copy_(start(torch.arange(self.num_languages)))

    def prompt(self, index: int) -> torch.Tensor:
        """The (l, d) prompt of one language slot (K = average slot)."""
        return self.forward(torch.tensor([index], device=self.table.device))[0]

    def forward(self, lang_ids: torch.Tensor) -> torch.Tensor:
        if lang_ids.dim() != 1:
            raise ValueError(f"lang_ids must be 1-D (batch,), got shape {tuple(lang_ids.shape)}")
        table = torch.cat([self.table, self.table.mean(dim=0, keepdim=True)], dim=0)
        return table.index_select(0, lang_ids)


PROMPT_KINDS = {"decomposed": DecomposedPrompts, "full": FullPrompts}  # StudentConfig.prompt_kind -> class
