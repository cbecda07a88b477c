"""Zero-shot languages (``python -m pyserini_kdspd.zeroshot``): the group figures on a hand-computed example, the
held-out languages checked before anything trains (the end-to-end run is in ``test_variants.py``, on the
driver's students trained there)."""
from __future__ import annotations

import pytest

from pyserini_kdspd import io, zeroshot

LANG_OF = {"a_en": "en", "a_el": "el", "a_de": "de", "x_el": "el", "b_en": "en", "b_el": "el", "c_en": "en"}
QRELS = {"q1": {"a_en": 1, "a_el": 1, "a_de": 1}, "q2": {"b_en": 1, "b_el": 1}, "q3": {"c_en": 1}}
RUN = {"q1": {"a_en": 0.9, "x_el": 0.8, "a_de": 0.7, "a_el": 0.6}, "q2": {"b_el": 0.9, "b_en": 0.5},
       "q3": {"c_en": 1.0}}


def test_a_groups_figures_count_only_its_languages_answers_in_the_mixed_ranking():
    ev = zeroshot.score_groups(RUN, QRELS, LANG_OF, {"seen": ["en", "de"], "held_out": ["el"]}, depth=100)
    # q1 ranks a_en 1, a_de 3, a_el 4 (x_el, another Greek sentence, at 2); q2 ranks b_el 1, b_en 2
    assert ev["all"].mean["map"] == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + 1 + 1) / 3)
    assert ev["seen"].mean["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2 + 1) / 3)
    assert ev["held_out"].mean["map"] == pytest.approx((1 / 4 + 1) / 2)  # q3 has no Greek answer: not judged
    assert ev["held_out"].num_queries == 2 and ev["held_out"].mean["recip_rank"] == pytest.approx(0.625)
    assert zeroshot.group_qrels(QRELS, LANG_OF, ["el"]) == {"q1": {"a_el": 1}, "q2": {"b_el": 1}, "q3": {}}


def test_held_out_languages_must_be_in_the_bitext_and_the_collection_and_leave_some_to_train():
    bitext, lareqa = ["de", "el", "fr"], ["de", "el", "en", "th"]
    assert zeroshot.split_languages(bitext, lareqa, ["el", "el"]) == (["de", "fr"], ["el"])
    for bad in (["th"], ["fr"], ["en"], []):  # not in the bitext; not in LAReQA; English (no en-en bitext); nothing
        with pytest.raises(ValueError, match="each must be a language of both the bitext"):
            zeroshot.split_languages(bitext, lareqa, bad)
    with pytest.raises(ValueError, match="nothing left to train on"):
        zeroshot.split_languages(["el"], lareqa, ["el"])
    pairs = zeroshot.variant_pairs(["el"], ["de", "fr"], students=["kdspd"])
    assert [(v.slug, v.driver, v.train_args) for pair in pairs for v in pair] == [
        ("kdspd", "kdspd", ("--student", "spd")),
        ("kdspd-without-el", None, ("--student", "spd", "--languages", "de", "fr"))]
