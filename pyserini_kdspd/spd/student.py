"""The KD-SPD student: a pretrained encoder + decomposed soft prompts + prompt decoder.

Three kinds share one class so training, saving and Pyserini encoding treat them alike:

* ``"spd"``   -- KD-SPD (paper section 3.2): language prompt (l x d) cross-attends to the
  encoder token states T through N = 6 layers; document vector = mean of the l outputs.
  With ``residual`` (off in the paper), the document vector is instead mean-pool(T) + g ⊙ decoder,
  g a per-dimension gate starting at 0: the student starts where KD-Encoder starts (the backbone's own
  pooled vector) and the language prompts learn a correction, rather than the decoder learning the
  whole space from a random start; ``residual_branch="linear"`` puts a d x d map starting at 0 in the gate's
  place (StudentConfig). The same holds for ``"utspd"``.
* ``"utspd"`` -- the universal-transformer variant (paper Table 4): one shared layer
  applied N = 12 times with temporal embeddings.
* ``"mean"``  -- the KD-Encoder baseline (Reimers & Gurevych 2020): mean pooling of T,
  no prompts, no language needed.

When the teacher's dimension differs from the encoder's hidden size, a learned linear map
(hidden -> teacher dim, ``projection``) is applied last, so the student can be distilled
with an MSE loss into the teacher's space. Outputs are L2-normalised iff
``config.normalize`` (the trainer copies the teacher's setting).

A saved folder is self-contained (loads offline without the original encoder path)::

    folder/kdspd_config.json      StudentConfig
    folder/model.safetensors      every weight: encoder.*, prompts.*, decoder.*, projection.*
    folder/encoder/config.json    the encoder's HF config (architecture rebuilt with from_config)
    folder/tokenizer.json, tokenizer_config.json, ...   the encoder's tokenizer
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io import write_json
from ..runtime import autocast, encode_sorted, resolve
from .decoders import SPDDecoder, UTSPDDecoder
from .languages import LanguageIdentifier, normalize_lang
from .prompts import PROMPT_KINDS

logger = logging.getLogger(__name__)

CONFIG_NAME = "kdspd_config.json"
QUERY_ENCODER_DIR = "query_encoder"  # the teacher's query side, saved inside the student folder
WEIGHTS_NAME = "model.safetensors"
ENCODER_SUBDIR = "encoder"
KINDS = ("spd", "utspd", "mean")
RESIDUAL_BRANCHES = ("gate", "linear")  # StudentConfig.residual_branch
DEFAULT_LAYERS = {"spd": 6, "utspd": 12, "mean": 0}
# The 14 languages of the shared training bitext plus English (en first, then alphabetical).
DEFAULT_LANGUAGES = ["en", "ar", "de", "el", "es", "fr", "hi", "id", "it", "pt", "ru", "th", "tr", "vi", "zh"]


def hidden_size(folder: str | os.PathLike) -> int | None:
    """``hidden_size`` from a Hugging Face folder's ``config.json``; None when absent or unreadable."""
    try:
        return int(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


@dataclass
class StudentConfig:
    """Everything needed to rebuild a student (saved as ``kdspd_config.json``).

    ``num_heads`` defaults to 8 (48-dim heads for a 384-d encoder, 96 for 768; divides
    384/768/1024) and ``ffn_dim`` to 4 * hidden (the usual Transformer ratio; 1536 for
    e5-small) when left at 0. ``decoder_layers`` None means the paper's default for the
    kind: 6 layers for spd, 12 steps for utspd. ``prompt_kind``: ``"decomposed"`` (the paper's
    P* ⊙ (u_k v_kᵀ)) or ``"full"`` (one free l x d prompt per language, the ablation); folders saved
    before the field existed load as decomposed. ``residual``: add the decoder to the encoder's mean-pooled
    vector through a gate starting at 0 (module docstring); folders saved before the field load without.
    ``residual_branch``: what carries the decoder into that sum, both starting at 0 so the student starts at the
    encoder's pooled vector: ``"gate"``, a per-dimension scale g, or ``"linear"``, a d x d map W. The decoder
    learns only as fast as its branch opens (dL/dD = g dL/dv); g's gradient is, per dimension, the correlation of
    the error with a random decoder's output, and g stayed near 0 (Table 2's run: mean |g| 0.001 after 1200
    steps). W's gradient is the outer product dL/dv Dᵀ, which can use any of the decoder's d features for any
    dimension (as ControlNet's zero convolution, LoRA's B = 0).
    """

    encoder: str
    student: str = "spd"
    prompt_length: int = 30
    prompt_kind: str = "decomposed"
    decoder_layers: int | None = None
    num_heads: int = 8
    ffn_dim: int = 0
    dropout: float = 0.1
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    output_dim: int | None = None
    max_length: int = 180
    normalize: bool = False
    residual: bool = False
    residual_branch: str = "gate"
    passage_prefix: str = ""
    teacher: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ValueError("StudentConfig.encoder must be a non-empty model name or path")
        self.student = str(self.student).lower()
        if self.student not in KINDS:
            raise ValueError(f"StudentConfig.student must be one of {KINDS}, got {self.student!r}")
        if self.decoder_layers is None:
            self.decoder_layers = DEFAULT_LAYERS[self.student]
        if self.student != "mean" and self.decoder_layers < 1:
            raise ValueError(f"decoder_layers must be >= 1 for student {self.student!r}")
        if self.prompt_length < 1:
            raise ValueError("prompt_length must be >= 1")
        if self.prompt_kind not in PROMPT_KINDS:
            raise ValueError(f"StudentConfig.prompt_kind must be one of {tuple(PROMPT_KINDS)}, "
                             f"got {self.prompt_kind!r}")
        if self.student == "mean" and self.residual:
            raise ValueError("residual: student 'mean' (KD-Encoder) is the residual path alone; it has no decoder")
        if self.residual_branch not in RESIDUAL_BRANCHES:
            raise ValueError(f"StudentConfig.residual_branch must be one of {RESIDUAL_BRANCHES}, "
                             f"got {self.residual_branch!r}")
        if self.residual_branch != "gate" and not self.residual:
            raise ValueError(f"residual_branch={self.residual_branch!r}: only a residual student has one")
        if self.student == "mean" and self.prompt_kind != "decomposed":
            raise ValueError(f"prompt_kind={self.prompt_kind!r}: student 'mean' (KD-Encoder) has no prompts")
        if self.max_length < 2:
            raise ValueError("max_length must be >= 2 (room for special tokens)")
        if self.output_dim is not None and self.output_dim < 1:
            raise ValueError("output_dim must be a positive integer or None")
        langs = [normalize_lang(code) for code in self.languages]
        if not langs or any(code is None for code in langs):
            raise ValueError(f"StudentConfig.languages must be non-empty language codes, got {self.languages!r}")
        dupes = sorted({c for c in langs if langs.count(c) > 1})
        if dupes:
            raise ValueError(f"StudentConfig.languages has duplicates after normalisation: {dupes}")
        self.languages = langs
        self.teacher = dict(self.teacher or {})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a StudentConfig must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown StudentConfig field(s) {unknown}; known: {sorted(names)}")
        if "encoder" not in data:
            raise ValueError("StudentConfig is missing the required field 'encoder'")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``kdspd_config.json`` (``path`` may be the folder or the file)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / CONFIG_NAME
        write_json(path, self.to_dict())
        return path

    def dimension(self, folder: str | os.PathLike) -> int:
        """Size of the document vectors a saved student in ``folder`` writes (``output_dim`` is None when the
        teacher's size already equals the encoder's hidden size, which then lives in ``encoder/config.json``)."""
        if self.output_dim:
            return int(self.output_dim)
        d = hidden_size(Path(folder) / ENCODER_SUBDIR)
        if d is None:
            raise ValueError(f"{Path(folder) / ENCODER_SUBDIR / 'config.json'}: cannot read the encoder's hidden_size")
        return d

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StudentConfig":
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; this is not a saved KD-SPD student")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e


def _resolve_encoder(name: str) -> str:
    """Local folders as is; aliases (e.g. ``multilingual-e5-small``) via models.resolve_model."""
    if os.path.isdir(name):  # a local folder wins over an alias of the same name
        return name
    from ..models import resolve_model

    return resolve_model(name)


def _strip_pooler(encoder: nn.Module) -> None:
    # BERT/XLM-R poolers are unused (we pool T ourselves); dropping them keeps unused
    # parameters out of the optimizer and the saved weights.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def _mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the unmasked token states, summed in fp32: a bf16 sum over hundreds of tokens loses precision."""
    m = attention_mask.unsqueeze(-1).to(torch.float32)
    return (states.float() * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class Student(nn.Module):
    """Encoder + (prompts, decoder | mean pooling) + optional projection. See module docstring."""

    def __init__(self, config: StudentConfig, encoder: nn.Module, tokenizer):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = encoder
        _strip_pooler(self.encoder)
        d = int(encoder.config.hidden_size)
        self.hidden_size = d
        ffn = config.ffn_dim or 4 * d
        if config.student == "mean":
            self.prompts = None
            self.decoder = None
        else:
            if d % config.num_heads:
                raise ValueError(f"encoder hidden size {d} is not divisible by num_heads={config.num_heads}")
            # prompts start at the scale of the encoder's own token embeddings (DecomposedPrompts)
            embedding_std = float(encoder.get_input_embeddings().weight.detach().float().std())
            self.prompts = PROMPT_KINDS[config.prompt_kind](len(config.languages), config.prompt_length, d,
                                                            init_std=embedding_std)
            if config.student == "spd":
                self.decoder = SPDDecoder(d, config.decoder_layers, config.num_heads, ffn, config.dropout)
            else:
                self.decoder = UTSPDDecoder(d, config.prompt_length, config.decoder_layers, config.num_heads, ffn,
                                            config.dropout)
        # the decoder's share of the vector, 0 at the start (config.residual): g per dimension, or W (d x d)
        self.gate = nn.Parameter(torch.zeros(d)) if config.residual and config.residual_branch == "gate" else None
        self.branch = None
        if config.residual and config.residual_branch == "linear":
            self.branch = nn.Linear(d, d)
            nn.init.zeros_(self.branch.weight)
            nn.init.zeros_(self.branch.bias)
        out = config.output_dim or d
        if out != d:
            self.projection = nn.Linear(d, out)
            nn.init.xavier_uniform_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)
        else:
            self.projection = None
        self.output_dim = out
        self._lang_index = {lang: i for i, lang in enumerate(config.languages)}
        self._warned_langs: set[str] = set()
        self._langid: LanguageIdentifier | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, config: StudentConfig) -> "Student":
        """Fresh prompts/decoder/projection on top of the pretrained ``config.encoder``."""
        from transformers import AutoModel, AutoTokenizer

        source = _resolve_encoder(config.encoder)
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{config.encoder}: a fast (Rust) tokenizer is required")
        encoder = AutoModel.from_pretrained(source)
        return cls(config, encoder, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Student":
        """Load a folder written by :meth:`save_pretrained` (offline; no original encoder needed)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (expected a saved KD-SPD student)")
        if not (folder / CONFIG_NAME).is_file():
            hint = (" It looks like a plain Hugging Face model: build a student on it with "
                    "Student.build(StudentConfig(encoder=...)).") if (folder / "config.json").is_file() else ""
            raise FileNotFoundError(f"{folder}: missing {CONFIG_NAME}; not a saved KD-SPD student.{hint}")
        config = StudentConfig.load(folder)
        enc_dir = folder / ENCODER_SUBDIR
        if not (enc_dir / "config.json").is_file():
            raise FileNotFoundError(f"{enc_dir / 'config.json'}: missing encoder config; the student folder is incomplete")
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing weights file; the student folder is incomplete")
        if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
            raise FileNotFoundError(f"{folder}: missing tokenizer files (tokenizer.json / tokenizer_config.json)")
        try:
            enc_config = AutoConfig.from_pretrained(str(enc_dir), local_files_only=True)
        except Exception as e:
            raise ValueError(f"{enc_dir / 'config.json'}: cannot read the encoder config ({e})") from e
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
        except Exception as e:
            raise ValueError(f"{folder}: cannot load the tokenizer ({type(e).__name__}: {e})") from e
        encoder = AutoModel.from_config(enc_config)
        model = cls(config, encoder, tokenizer)
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{weights}: corrupted or not a safetensors file ({e})") from e
        model._load_checked(state, weights)
        model.to(device)
        model.eval()
        return model

    def _load_checked(self, state: dict[str, torch.Tensor], source: Path) -> None:
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing tensor(s), e.g. {missing[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:5]}")
        if shapes:
            problems.append(f"shape mismatch: {'; '.join(shapes[:5])}")
        if problems:
            raise ValueError(f"{source}: weights do not match {CONFIG_NAME} ({'; '.join(problems)})")
        self.load_state_dict(state, strict=True)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write a self-contained folder (see module docstring); returns its path."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}
        tmp = folder / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "kdspd_student": self.config.student})
        os.replace(tmp, folder / WEIGHTS_NAME)
        self.encoder.config.save_pretrained(str(folder / ENCODER_SUBDIR))
        self.tokenizer.save_pretrained(str(folder))
        self.config.save(folder)  # last: a folder with a config is complete
        return folder

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def average_lang_id(self) -> int:
        """Index of the "average" prompt slot used for languages not seen in training."""
        return len(self.config.languages)

    def lang_id(self, lang: str | None) -> int | None:
        """Slot of one language code; unknown -> average slot (warns once); None/"" -> None."""
        code = normalize_lang(lang)
        if code is None:
            return None
        idx = self._lang_index.get(code)
        if idx is None:
            if code not in self._warned_langs:
                self._warned_langs.add(code)
                logger.warning("language %r was not seen in training (trained: %s); using the average prompt",
                               lang, ",".join(self.config.languages))
            idx = self.average_lang_id
        return idx

    def identify_language(self, text: str) -> str | None:
        """py3langid restricted to the trained languages (None for text without letters)."""
        if self._langid is None:
            self._langid = LanguageIdentifier(self.config.languages)
        return self._langid.classify(text)

    def lang_ids(self, langs: Sequence[str | None] | str | None, texts: Sequence[str] | None = None) -> torch.LongTensor:
        """Prompt slot per text. ``langs`` None (or a None/"" entry) -> language ID on ``texts``.

        A single string applies to every text. Unknown codes -> the average slot.
        Text that language ID cannot place (no letters) -> the average slot.
        """
        if langs is None or isinstance(langs, str):
            if texts is None:
                raise ValueError("lang_ids: give langs, or texts for language identification")
            langs = [langs] * len(texts)
        langs = list(langs)
        if texts is not None and len(texts) != len(langs):
            raise ValueError(f"lang_ids: {len(langs)} languages for {len(texts)} texts")
        out = []
        for i, lang in enumerate(langs):
            idx = self.lang_id(lang)
            if idx is None:
                if texts is None:
                    raise ValueError(f"lang_ids: language #{i} is missing and no texts were given to identify it")
                found = self.identify_language(texts[i])
                idx = self._lang_index.get(found, self.average_lang_id) if found else self.average_lang_id
            out.append(idx)
        return torch.tensor(out, dtype=torch.long)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None, padding: bool = True):
        """Prefix with ``passage_prefix`` and truncate to ``max_length`` tokens (default config.max_length).

        Empty text becomes the prefix alone (plus the tokenizer's special tokens).
        """
        texts = self._check_texts(texts)
        return self.tokenizer(
            [self.config.passage_prefix + t for t in texts],
            max_length=self.effective_max_length(max_length),
            truncation=True,
            padding=padding,
            return_tensors="pt" if padding else None,
        )

    def effective_max_length(self, max_length: int | None = None) -> int:
        """``max_length`` (default config.max_length) capped at what the encoder's positions allow."""
        n = int(max_length or self.config.max_length)
        if n < 2:
            raise ValueError(f"max_length must be >= 2, got {n}")
        cap = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(cap, int) and 0 < cap < 1_000_000:
            n = min(n, cap)
        return n

    @staticmethod
    def _check_texts(texts) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}: {t!r:.80}")
        return texts

    # ------------------------------------------------------------------ model
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                lang_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, output_dim) float32 document vectors (L2-normalised iff config.normalize).

        ``lang_ids`` None uses the average prompt for every row (ignored by "mean").
        """
        attention_mask = attention_mask.to(input_ids.device)
        empty = attention_mask.sum(dim=1) == 0
        if bool(empty.any()):  # a row without tokens would give NaN attention: attend to position 0
            attention_mask = attention_mask.clone()
            attention_mask[empty, 0] = 1
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # T: (B, n, d)
        if self.decoder is None:
            pooled = _mean_pool(states, attention_mask)
        else:
            if lang_ids is None:
                lang_ids = torch.full((input_ids.shape[0],), self.average_lang_id, dtype=torch.long)
            lang_ids = lang_ids.to(states.device)
            prompts = self.prompts(lang_ids).to(states.dtype)
            pooled = self.decoder(prompts, states, attention_mask == 0)
            if self.gate is not None:
                pooled = _mean_pool(states, attention_mask) + self.gate * pooled.float()
            elif self.branch is not None:
                pooled = _mean_pool(states, attention_mask) + self.branch(pooled).float()
        if self.projection is not None:
            pooled = self.projection(pooled)
        pooled = pooled.float()
        if self.config.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled

    @torch.inference_mode()
    def encode(self, texts: Iterable[str], langs: Sequence[str | None] | str | None = None,
               batch_size: int | None = None, max_length: int | None = None, precision: str | None = None) -> np.ndarray:
        """(n, output_dim) float32 vectors in input order.

        ``batch_size``, ``max_length`` and ``precision`` left at None come from
        :func:`pyserini_kdspd.runtime.resolve` (environment, then this model's config, then
        64 / config.max_length / "auto": bf16 autocast where the hardware has native bf16).
        Texts run in length-sorted batches (:func:`~pyserini_kdspd.runtime.encode_sorted`).
        Texts longer than ``max_length`` tokens (incl. prefix and special tokens) are
        truncated; empty texts are encoded as the prefix alone. ``langs``: one code per
        text, one code for all, or None to identify languages (see :meth:`lang_ids`).
        """
        texts = self._check_texts(texts)
        settings = resolve(self.config.to_dict(), batch_size=batch_size, max_length=max_length, precision=precision)
        if not texts:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        ids_lang = self.lang_ids(langs, texts) if self.decoder is not None else None
        encoded = self.tokenize(texts, max_length=settings.max_length, padding=False)["input_ids"]
        lengths = [len(x) for x in encoded]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = self.device
        prec = settings.precision_for(device)

        def encode_batch(idx: np.ndarray) -> np.ndarray:
            width = max(max(lengths[j] for j in idx), 1)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, j in enumerate(idx):
                ids[row, :lengths[j]] = torch.as_tensor(encoded[j], dtype=torch.long)
                mask[row, :lengths[j]] = 1
            lid = ids_lang[torch.as_tensor(idx)] if ids_lang is not None else None
            with autocast(prec, device):
                return self.forward(ids.to(device), mask.to(device), lid).cpu().numpy()

        was_training = self.training
        self.eval()
        try:
            return encode_sorted(lengths, encode_batch, settings.batch_size, self.output_dim)
        finally:
            self.train(was_training)
