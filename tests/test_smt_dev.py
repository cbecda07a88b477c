"""The SMT aligner's dev comparison on FLORES-200 (real bitext, real Lucene indexes, real FLORES sentences)."""
import json

from pyserini_kdspd.search.translate import dev


def test_flores_dev_scores_translations_and_reports_repeats(shared_data, tmp_path):
    """IBM Model 1 tables from 3,000 Greek pairs find most FLORES translations; its two repeats agree exactly
    (deterministic); the report and the README block carry both repeats and the summary."""
    bitext = tmp_path / "bitext"
    bitext.mkdir()
    lines = (shared_data / "bitext" / "en-el.tsv").read_text(encoding="utf-8").splitlines()[:3000]
    (bitext / "en-el.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = tmp_path / "out"
    assert dev.main(["--aligners", "ibm1", "--languages", "el", "--repeats", "2", "--output-root", str(root),
                     "--data-dir", str(shared_data), "--bitext-dir", str(bitext)]) == 0
    results = json.loads((root / "runs/smt-dev/smt-dev.json").read_text())["results"]["ibm1"]
    assert len(results) == 2 and results[0] == results[1]
    mrr = results[0]["el"]["recip_rank"]
    assert 0.5 < mrr < 1 and results[0]["el"]["P_1"] <= mrr
    assert len((root / "runs/smt-dev/ibm1-1/el.txt").read_text().splitlines()) > 1012  # 100 hits for most
    # translating nothing (an empty table: every term kept as it is) finds far fewer Greek sentences
    from pyserini_kdspd.distill.dev import flores_dir
    from pyserini_kdspd.search.translate.smt import SMTTranslator, TranslationTable

    empty = SMTTranslator({"el": TranslationTable({})})
    untranslated = dev.flores_retrieval(empty, "el", flores_dir(None, shared_data), root, tmp_path / "u/el.txt")
    assert untranslated["recip_rank"] < mrr / 2
    text = (root / dev.REPORT).read_text()
    assert "| ibm1 #1 | " in text and "| ibm1 #2 | " in text and "| ibm1 | 2 | " in text
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- smt-dev:start -->\nold\n<!-- smt-dev:end -->\ny\n")
    assert dev.main(["--readme", str(readme), "--output-root", str(root)]) == 0
    assert "| ibm1 | 2 | " in readme.read_text() and "old" not in readme.read_text()
