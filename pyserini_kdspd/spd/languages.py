"""Language codes and language identification for choosing a document's prompt.

Collections tag languages in many spellings (``de``, ``deu``, ``de-DE``,
``zho_Hans``, ``zh-cn``); prompts are keyed by ISO 639-1 codes, so everything is
normalised here. Untagged text is identified with the packaged ``py3langid``
model restricted to the student's trained languages (an untagged document in a
language never trained on therefore gets the closest trained language's prompt;
tag it explicitly to get the paper's average prompt for unseen languages).
"""
from __future__ import annotations

import re
import threading

# ISO 639-3 / FLORES-200 / Tatoeba codes of the languages this project handles -> ISO 639-1
_ALIASES = {
    "eng": "en", "ara": "ar", "arb": "ar", "deu": "de", "ger": "de", "ell": "el", "gre": "el",
    "fin": "fi", "fra": "fr", "fre": "fr", "hin": "hi", "ind": "id", "ita": "it", "por": "pt",
    "rus": "ru", "spa": "es", "tha": "th", "tur": "tr", "vie": "vi", "zho": "zh", "chi": "zh",
    "cmn": "zh", "nld": "nl", "dut": "nl", "swe": "sv", "jpn": "ja", "kor": "ko", "pol": "pl",
    "ces": "cs", "cze": "cs", "dan": "da", "nor": "no", "nob": "nb", "hun": "hu", "ukr": "uk",
    "fas": "fa", "per": "fa", "heb": "he", "ron": "ro", "rum": "ro", "bul": "bg", "cat": "ca",
    "est": "et", "lit": "lt", "lav": "lv", "slk": "sk", "slv": "sl", "hrv": "hr", "srp": "sr",
    "msa": "ms", "zsm": "ms", "ben": "bn", "urd": "ur", "tam": "ta", "tel": "te", "swa": "sw",
    "swh": "sw", "iw": "he", "in": "id",
}


_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def is_language_code(text: str) -> bool:
    """``de``, ``deu``, ``de-DE``, ``zho_Hans``: the spellings :func:`normalize_lang` takes (not a file name)."""
    return isinstance(text, str) and bool(_LANGUAGE_CODE.match(text.strip()))


def normalize_lang(code: str | None) -> str | None:
    """``"de-DE"`` -> ``"de"``, ``"zho_Hans"`` -> ``"zh"``, ``"ENG"`` -> ``"en"``; None/"" -> None."""
    if code is None:
        return None
    if not isinstance(code, str):
        raise TypeError(f"language code must be a string or None, got {type(code).__name__}: {code!r}")
    c = code.strip().lower().replace("_", "-")
    if not c:
        return None
    c = c.split("-", 1)[0]
    return _ALIASES.get(c, c)


class LanguageIdentifier:
    """py3langid restricted to a language set (its own instance: no global state)."""

    def __init__(self, languages: list[str]):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier as _LI

        self._model = _LI.from_model_file(MODEL_FILE, norm_probs=False)
        supported = set(self._model.nb_classes)
        self.languages = [lang for lang in languages if lang in supported]
        self.unsupported = [lang for lang in languages if lang not in supported]
        if self.languages:
            self._model.set_languages(self.languages)
        self._lock = threading.Lock()  # set_languages/classify share mutable arrays

    def classify(self, text: str) -> str | None:
        """Best language among the allowed ones; None for text without letters or no supported language."""
        if not self.languages or not text or not any(ch.isalpha() for ch in text):
            return None  # no evidence: py3langid would return an arbitrary language
        with self._lock:
            lang, _ = self._model.classify(text)
        return normalize_lang(lang)
