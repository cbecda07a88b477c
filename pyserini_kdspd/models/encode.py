"""Encode with a Hugging Face folder the E5 / MiniLM way (mean pooling, L2 norm), for checks and tests."""
from __future__ import annotations


def load_folder(folder):
    """``(tokenizer, model)`` of a Hugging Face folder, model in eval mode (load once, encode often)."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()


def encode_folder(folder, texts: list[str], prefix: str = "", batch_size: int = 32, loaded=None):
    """Mean-pooled, L2-normalised embeddings of ``prefix + text`` (numpy), the E5 / MiniLM recipe.

    ``loaded`` reuses a :func:`load_folder` result instead of reading the folder again.
    """
    import numpy as np
    import torch

    tok, model = loaded or load_folder(folder)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok([prefix + t for t in texts[i:i + batch_size]], padding=True, truncation=True,
                        max_length=512, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(emb, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)
