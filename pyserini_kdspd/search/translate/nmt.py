"""Whole-query translators: from a file, from human references, or from a Hugging Face MT model.

``HumanTranslator`` reads reference translations of the same query ids (for
LAReQA: XQuAD's professional translations, ``topics/lareqa.{lang}.tsv``). Runs
that use it are labelled "human translation": an upper bound for MT, not NMT.
``HFTranslator`` needs the model weights, i.e. a network on first use or a local
copy; it loads lazily and fails with a message saying so.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from ...io import FormatError, read_topics, text_lines

log = logging.getLogger(__name__)


class FileTranslator:
    """Translations computed elsewhere.

    ``source`` is either a TSV ``qid<TAB>lang<TAB>text`` holding all languages, or
    a topics path with a ``{lang}`` placeholder (one ``qid<TAB>text`` file per
    language). Translations are looked up by query id; ``translate(texts)`` maps
    texts to ids through ``source_topics`` (the untranslated topics).
    """

    name = "file"

    def __init__(self, source, source_topics: Mapping[str, str] | None = None):
        self.source = str(source)
        self.by_text = {}
        if source_topics:
            for qid, text in source_topics.items():
                self.by_text.setdefault(text, qid)
        self._cache: dict[str, dict[str, str]] = {}
        if "{lang}" not in self.source:
            self._cache = self._read_multilingual(Path(self.source))

    @staticmethod
    def _read_multilingual(path: Path) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for lineno, line in text_lines(path):
            parts = line.split("\t")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise FormatError(path, lineno, f"expected 'qid<TAB>lang<TAB>text', got {line[:80]!r}")
            qid, lang, text = (p.strip() for p in parts)
            if qid in out.setdefault(lang, {}):
                raise FormatError(path, lineno, f"duplicate translation of {qid!r} into {lang!r}")
            out[lang][qid] = text
        return out

    def _lang(self, lang: str) -> dict[str, str]:
        if "{lang}" in self.source:
            if lang not in self._cache:
                self._cache[lang] = read_topics(self.source.format(lang=lang))
            return self._cache[lang]
        if lang not in self._cache:
            raise KeyError(f"{self.source} has no translations into {lang!r} "
                           f"(has: {', '.join(sorted(self._cache)) or 'none'})")
        return self._cache[lang]

    def translate_topics(self, topics: Mapping[str, str], target_lang: str) -> dict[str, str]:
        table = self._lang(target_lang)
        missing = [q for q in topics if q not in table]
        if missing:
            where = self.source.format(lang=target_lang) if "{lang}" in self.source else self.source
            raise KeyError(f"{where}: no {target_lang} translation for {len(missing)} of {len(topics)} queries "
                           f"(e.g. {missing[:3]})")
        return {q: table[q] for q in topics}

    def translate(self, texts: list[str], target_lang: str) -> list[str]:
        if not self.by_text:
            raise ValueError("FileTranslator looks translations up by query id: pass source_topics to translate "
                             "texts, or call translate_topics")
        unknown = [t for t in texts if t not in self.by_text]
        if unknown:
            raise KeyError(f"{len(unknown)} texts are not among the source topics (e.g. {unknown[0][:60]!r})")
        table = self.translate_topics({self.by_text[t]: t for t in texts}, target_lang)
        return [table[self.by_text[t]] for t in texts]


class HumanTranslator(FileTranslator):
    """Reference human translations of the topics (LAReQA: XQuAD's); an upper bound for MT, not NMT."""

    name = "human translation"

    def __init__(self, pattern="topics/lareqa.{lang}.tsv", source_topics: Mapping[str, str] | None = None):
        if "{lang}" not in str(pattern):
            raise ValueError(f"HumanTranslator needs a path pattern with {{lang}}, got {pattern!r}")
        super().__init__(pattern, source_topics)


# NLLB-200 (FLORES-200) codes for the languages of the paper's collections.
NLLB_CODES = {"ar": "arb_Arab", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn",
              "fi": "fin_Latn", "fr": "fra_Latn", "hi": "hin_Deva", "id": "ind_Latn", "it": "ita_Latn",
              "pt": "por_Latn", "ru": "rus_Cyrl", "th": "tha_Thai", "tr": "tur_Latn", "vi": "vie_Latn",
              "zh": "zho_Hans"}
DEFAULT_MODEL = "facebook/nllb-200-distilled-600M"


class TranslatorUnavailable(RuntimeError):
    pass


class HFTranslator:
    """Neural MT through ``transformers``: NLLB-200 / M2M-100 (one model, ``{lang}`` codes) or
    Marian (``Helsinki-NLP/opus-mt-en-{lang}``: a model per language; put ``{lang}`` in the name).

    Models load on first use, so constructing one never needs a network.
    """

    name = "nmt"

    def __init__(self, model: str | None = None, source_lang: str = "en", batch_size: int = 16,
                 max_length: int = 256, device: str = "cpu"):
        self.model = model or DEFAULT_MODEL
        self.source_lang = source_lang
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._loaded: dict[str, tuple] = {}

    def _codes(self, target_lang: str) -> tuple[str, str]:
        m = self.model.lower()
        if "nllb" in m:
            table = NLLB_CODES
        elif "m2m" in m:
            table = {k: k for k in NLLB_CODES}
        else:
            return self.source_lang, target_lang
        for lang in (self.source_lang, target_lang):
            if lang not in table:
                raise ValueError(f"{self.model}: no language code for {lang!r} (known: {', '.join(sorted(table))})")
        return table[self.source_lang], table[target_lang]

    def _load(self, target_lang: str):
        name = self.model.format(lang=target_lang, src=self.source_lang)
        if name not in self._loaded:
            try:
                from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

                tok = AutoTokenizer.from_pretrained(name)
                model = AutoModelForSeq2SeqLM.from_pretrained(name).to(self.device).eval()
            except (OSError, ValueError, ImportError) as e:
                raise TranslatorUnavailable(
                    f"cannot load the MT model {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
                    f"It is downloaded from the Hugging Face Hub on first use, which needs a network; offline, "
                    f"pass a local model folder or use --translation file/human/smt.") from e
            self._loaded[name] = (tok, model)
        return self._loaded[name]

    def translate(self, texts: list[str], target_lang: str) -> list[str]:
        import torch

        src_code, tgt_code = self._codes(target_lang)
        tok, model = self._load(target_lang)
        marian = "{lang}" in self.model
        out: list[str] = []
        if not marian:
            tok.src_lang = src_code
        for i in range(0, len(texts), self.batch_size):
            batch = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=self.max_length).to(self.device)
            kwargs = {"max_new_tokens": self.max_length, "num_beams": 4}
            if not marian:
                kwargs["forced_bos_token_id"] = tok.convert_tokens_to_ids(tgt_code)
            with torch.inference_mode():
                gen = model.generate(**batch, **kwargs)
            out.extend(tok.batch_decode(gen, skip_special_tokens=True))
        return out
