"""KD-SPD student models: decomposed soft prompts decoded over a multilingual encoder.

``Student.build(StudentConfig(encoder="multilingual-e5-small"))`` makes a fresh student;
``Student.from_pretrained(folder)`` loads a trained one; ``student.encode(texts, langs)``
gives document vectors. See :mod:`pyserini_kdspd.spd.student`.
"""
from .decoders import CrossAttentionLayer, SPDDecoder, UTSPDDecoder
from .languages import LanguageIdentifier, normalize_lang
from .prompts import PROMPT_KINDS, DecomposedPrompts, FullPrompts
from .student import CONFIG_NAME, DEFAULT_LANGUAGES, KINDS, WEIGHTS_NAME, Student, StudentConfig

__all__ = [
    "Student", "StudentConfig", "DecomposedPrompts", "FullPrompts", "PROMPT_KINDS", "SPDDecoder", "UTSPDDecoder",
    "CrossAttentionLayer",
    "normalize_lang", "LanguageIdentifier",
    "CONFIG_NAME", "WEIGHTS_NAME", "DEFAULT_LANGUAGES", "KINDS",
]
