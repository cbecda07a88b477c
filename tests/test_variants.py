"""Student variants compared on LAReQA (``python -m pyserini_kdspd.ablations`` / ``.objectives``): every listed
variant is a valid training command of the driver's KD-SPD, the driver's students are reused and never retrained,
and end-to-end runs on a LAReQA slice (the ablations; the zero-shot languages of ``python -m pyserini_kdspd.zeroshot``)
train, encode, search, score and write their tables and README blocks, on the driver's students trained once here."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from pyserini_kdspd import ablations, io, objectives
from pyserini_kdspd.analysis.variants import Variant, check_driver_folders, compare, train_command
from pyserini_kdspd.distill.losses import parse_loss
from pyserini_kdspd.table2 import STUDENTS, Collection, Settings, Stages, train_students
from pyserini_kdspd.train import build_parser


@pytest.mark.parametrize("module", [ablations, objectives], ids=["ablations", "objectives"])
def test_every_variant_is_a_train_command_of_the_drivers_kdspd(module, tmp_path):
    s = Settings(root=tmp_path, train_steps=7)
    slugs = [v.slug for v in module.VARIANTS]
    assert len(set(slugs)) == len(slugs) and module.VARIANTS[0].driver == "kdspd"  # KD-SPD is the reference row
    drivers = {folder: kind for _, kind, folder in STUDENTS}
    for v in module.VARIANTS:
        args = build_parser().parse_args(train_command(s)[3:] + list(v.train_args) + ["--output", "x"])
        assert (args.max_steps, args.seed, args.encoder, args.teacher) == (7, 0, s.encoder, s.teacher)
        assert args.lr is None and args.head_lr is None  # train's swept defaults: LEARNING_RATES
        if v.driver:  # the row is the driver's student of the same kind
            assert drivers[v.driver] == args.student and v.folder(tmp_path) == tmp_path / "models" / v.driver
        else:
            assert v.folder(tmp_path) == tmp_path / "models" / "variants" / v.slug
        if args.loss:
            parse_loss(args.loss)
    if module is objectives:
        assert {v.loss() for v in module.VARIANTS[1:]} >= {"score-kd", "mse+score-kd:0.5"}
    else:
        assert {"utspd", "spd-l10", "spd-l60", "spd-n2", "spd-full", "kd-encoder"} <= set(slugs)
        # the residual path: the driver's choice, and the other one an ablation row
        from pyserini_kdspd.train import RESIDUAL
        other = next(v for v in module.VARIANTS if v.slug in ("spd-decoder-only", "spd-residual"))
        residual = build_parser().parse_args(train_command(s)[3:] + list(other.train_args) + ["--output", "x"]).residual
        assert residual is not RESIDUAL["spd"] and isinstance(residual, bool)


def _fake_driver_folder(folder, log: dict) -> None:
    """The files by which a folder counts as finished (distill.is_complete), with a chosen log."""
    (folder / "query_encoder").mkdir(parents=True)
    io.write_json(folder / "kdspd_config.json", {"encoder": "x"})
    io.write_json(folder / "training_log.json", log)


def test_a_driver_student_of_another_budget_or_unfinished_is_refused(tmp_path):
    s = Settings(root=tmp_path, train_steps=300)
    kdspd = ablations.VARIANTS[0]
    check_driver_folders([kdspd], s)  # absent: trained where the driver will find it
    _fake_driver_folder(tmp_path / "models" / "kdspd", {"complete": True, "args": {"max_steps": 1200}})
    with pytest.raises(ValueError, match=r"trained for 1200 steps, this command asks for 300: it is never retrained"):
        check_driver_folders([kdspd], s)
    check_driver_folders([kdspd], replace(s, train_steps=1200))
    io.write_json(tmp_path / "models" / "kdspd" / "training_log.json", {"complete": False, "args": {"max_steps": 1200}})
    with pytest.raises(ValueError, match="holds an unfinished run"):
        check_driver_folders([kdspd], replace(s, train_steps=1200))
    check_driver_folders([Variant("other", "other", driver=None)], s)  # only the driver's rows are guarded


def test_cli_refuses_an_unknown_variant_and_a_readme_without_a_table(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        ablations.main(["--variants", "utspd,spd-l11", "--output-root", str(tmp_path)])
    assert err.value.code == 2 and "unknown spd-l11; choose from kdspd, utspd" in capsys.readouterr().err
    readme = tmp_path / "README.md"
    readme.write_text("<!-- objectives:start -->\n<!-- objectives:end -->\n", encoding="utf-8")
    assert objectives.main(["--readme", str(readme), "--output-root", str(tmp_path)]) == 2
    assert "runs/lareqa/objectives.json: missing; run `python -m pyserini_kdspd.objectives`" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # nothing else written


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def small_data(tmp_path_factory, shared_data):
    """A data folder in the shared layout: 40 real pairs of en-de, en-el and en-fr, and FLORES devtest cut to 10
    lines of those and Finnish (the zero-shot language), so that the driver's own command trains fast (Greek is also
    a LAReQA language: the zero-shot experiment holds it out)."""
    root = tmp_path_factory.mktemp("data")
    for lang in ("de", "el", "fr"):
        lines = (shared_data / "bitext" / f"en-{lang}.tsv").read_text(encoding="utf-8").splitlines()
        (root / "bitext").mkdir(exist_ok=True)
        (root / "bitext" / f"en-{lang}.tsv").write_text("\n".join(lines[::2000][:40]) + "\n", encoding="utf-8")
    (root / "flores200" / "devtest").mkdir(parents=True)
    for code in ("eng_Latn", "deu_Latn", "ell_Grek", "fra_Latn", "fin_Latn"):
        lines = (shared_data / "flores200" / "devtest" / f"{code}.devtest").read_text(encoding="utf-8").splitlines()
        (root / "flores200" / "devtest" / f"{code}.devtest").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def slice_collection(lareqa_slice, tmp_path_factory):
    """The LAReQA slice (12 questions, their answers in 11 languages, 150 other sentences) as the driver's
    ``Collection``, with the per-language folders the bias statistic reads each document's language from."""
    root, qids = lareqa_slice
    by_lang = tmp_path_factory.mktemp("by-lang")
    recs = list(io.read_jsonl(root / "corpus" / "docs.jsonl"))
    for lang in sorted({r["lang"] for r in recs}):
        io.write_jsonl(by_lang / lang / "docs.jsonl", (r for r in recs if r["lang"] == lang))
    col = Collection(name="lareqa", corpus_dir=root / "corpus", topics=root / "topics.en.tsv", qrels=root / "qrels.txt",
                     by_lang={lang: by_lang / lang for lang in sorted({r["lang"] for r in recs})}, parallel=True)
    return col, len(recs), qids


@pytest.fixture(scope="module")
def driver(small_data, tmp_path_factory):
    """The Table 2 driver's settings after its training stage (both students, 2 steps, MiniLM as backbone and
    teacher), in a root shared by this file's end-to-end tests (their teacher-target cache too)."""
    root = tmp_path_factory.mktemp("driver")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYSERINI_KDSPD_CACHE", str(root / "cache"))
        mp.setenv("PYSERINI_KDSPD_THREADS", "1")
        s = Settings(root=root, data=small_data, encoder="all-MiniLM-L6-v2", teacher="all-MiniLM-L6-v2",
                     train_steps=2, threads=1)
        train_students(s, Stages())  # the driver's own training stage
        yield s


@pytest.mark.slow
def test_ablations_reuse_the_drivers_kdspd_and_train_score_and_tabulate_a_full_prompt_variant(driver, slice_collection):
    """The ablations reuse the driver's KD-SPD untouched and train the full-prompt variant with the same command;
    both are encoded, searched and scored on the slice; a second run reuses everything; another budget is refused;
    --readme writes the block."""
    from pyserini_kdspd.evaluate import evaluate
    from pyserini_kdspd.spd import FullPrompts, Student

    col, n_docs, qids = slice_collection
    s, root = driver, driver.root
    weights_file = root / "models" / "kdspd" / "model.safetensors"
    stamp = (io.sha256_file(weights_file), weights_file.stat().st_mtime_ns)
    variants = [v for v in ablations.VARIANTS if v.slug in ("kdspd", "spd-full")]

    out = compare(variants, col, s, "ablations", note="Test note.", command="python -m pyserini_kdspd.ablations")
    meta = io.read_json(out["json"])
    kdspd, full = meta["rows"]
    assert (kdspd["name"], full["name"]) == ("KD-SPD (l=30, N=6, MSE)", "full prompt per language")
    assert (io.sha256_file(weights_file), weights_file.stat().st_mtime_ns) == stamp and not kdspd["trained_now"]
    assert full["trained_now"] and full["folder"] == "models/variants/spd-full" and full["steps"] == 2
    assert kdspd["weights_sha256"] == stamp[0] and (kdspd["lr"], kdspd["head_lr"]) == (full["lr"], full["head_lr"])

    student = Student.from_pretrained(root / full["folder"])  # the full-prompt option trained and loads
    assert student.config.prompt_kind == "full" and isinstance(student.prompts, FullPrompts)
    assert student.prompts.table.shape == (4, 30, 384)  # en, de, el, fr: one l x d prompt each
    assert io.read_json(root / full["folder"] / "training_log.json")["settings"]["prompt_kind"] == "full"
    assert "prompt_kind" not in io.read_json(root / kdspd["folder"] / "training_log.json")["settings"]

    for row in (kdspd, full):
        run = root / row["run"]["file"]
        assert set(io.read_run(run)) == set(qids)
        assert row["lareqa"] == pytest.approx(evaluate(run, col.qrels, metrics=tuple(row["lareqa"])).mean)
        assert row["encode"]["documents"] == n_docs and row["encode"]["sentences_per_second"] > 0
        assert row["dev"]["p1_en_xx"] == io.read_json(root / row["folder"] / "training_log.json")[
            "dev"][-1]["results"]["mean_seen"]["p1_en_xx"]
        assert row["bias"]["measured"] > 0 and 0 < row["bias"]["rank_distance_mean"] < n_docs
    assert kdspd["p_vs_reference"] is None and set(full["p_vs_reference"]) == set(kdspd["lareqa"])
    table = out["md"].read_text(encoding="utf-8")
    assert table.count("\n| ") == 2 and "| full prompt per language | `--student spd --prompt-kind full` |" in table
    assert f"| {kdspd['lareqa']['map']:.3f}" in table and "Test note." in table and "2 training steps" in table
    # dev before test: pooled MAP, how much the language prompts move the vectors (fresh prompts after 2 steps: they
    # do; distill.dev.prompt_swap, read back from its cache beside the weights), then LAReQA
    for row in (kdspd, full):
        swap = io.read_json(root / row["folder"] / "prompt_swap.json")["result"]["mean"]
        assert row["prompt_swap"] == swap > 0
        assert f"| {row['dev']['pooled_query_map']:.4f} | {swap:.1e} | {row['lareqa']['map']:.3f}" in table

    weights = {f: f.stat().st_mtime_ns for f in (root / "models" / d / "model.safetensors"
                                                 for d in ("kdspd", "kd-encoder", "variants/spd-full"))}
    indexes = {p: p.stat().st_mtime_ns for p in (root / "indexes" / "lareqa" / "variants" / v.slug / "index"
                                                 for v in variants)}
    again = io.read_json(compare(variants, col, s, "ablations", note="Test note.", command="x")["json"])
    assert not any(r["trained_now"] for r in again["rows"])  # nothing retrained, re-encoded or timed anew
    assert {p: p.stat().st_mtime_ns for p in weights} == weights and len(weights) == 3
    assert {p: p.stat().st_mtime_ns for p in indexes} == indexes and len(indexes) == 2
    assert [r["encode"] for r in again["rows"]] == [r["encode"] for r in meta["rows"]]
    assert [r["lareqa"] for r in again["rows"]] == [r["lareqa"] for r in meta["rows"]]

    with pytest.raises(ValueError, match="trained for 2 steps, this command asks for 3"):
        compare(variants, col, replace(s, train_steps=3), "ablations")
    assert {p: p.stat().st_mtime_ns for p in weights} == weights

    readme = root / "README.md"
    readme.write_text("# x\n<!-- ablations:start -->\nold\n<!-- ablations:end -->\ntail\n", encoding="utf-8")
    assert ablations.main(["--readme", str(readme), "--output-root", str(root)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.startswith("# x\n<!-- ablations:start -->\n<!-- written by `python -m "
                                                 "pyserini_kdspd.ablations --readme`")
    assert "`x` finished" in text and "| full prompt per language |" in text
    assert text.endswith("<!-- ablations:end -->\ntail\n")


@pytest.fixture(scope="module")
def slice_paths(lareqa_slice, slice_collection, tmp_path_factory):
    """The slice in LAReQA's layout, its questions asked in en, de and zh, with the cross-lingual topics and qrels
    the data stage writes (``prepare_cross_lingual``), and the ``Collection`` of that layout."""
    from pyserini_kdspd.data.lareqa import output_paths, prepare_cross_lingual

    root, _ = lareqa_slice
    col, _, _ = slice_collection
    base = output_paths(tmp_path_factory.mktemp("xl"))
    paths = replace(base, topics={lang: base.topics[lang] for lang in ("en", "de", "zh")})
    io.write_jsonl(paths.corpus / "corpus.jsonl", io.read_jsonl(col.corpus_dir / "docs.jsonl"))
    for lang, topics in paths.topics.items():
        io.write_topics(topics, io.read_topics(root / f"topics.{lang}.tsv"))
    io.write_qrels(paths.qrels, io.read_qrels(col.qrels))
    prepare_cross_lingual(paths)
    return replace(col, corpus_dir=paths.corpus, topics=paths.topics["en"], qrels=paths.qrels), paths


@pytest.mark.slow
def test_objectives_train_a_loss_and_add_x_to_english_and_x_to_all_columns(driver, slice_paths):
    """The objectives table: the driver's KD-SPD and a score-kd student, each with its English-question row and the
    X -> En / X -> All columns from stock-Pyserini runs of the tagged questions (German and Chinese questions
    through the student, English ones through the teacher): P@1 over the non-English questions and MAP over all,
    recomputed here from the run files; the Table 2 metrics stay those of the English questions."""
    from pyserini_kdspd.data.lareqa import split_query_id
    from pyserini_kdspd.evaluate import evaluate

    col, paths = slice_paths
    s = replace(driver, root=driver.root.parent / (driver.root.name + "-objectives"))
    shutil.copytree(driver.root / "models" / "kdspd", s.root / "models" / "kdspd")  # the driver's, reused as is
    variants = [v for v in objectives.VARIANTS if v.slug in ("kdspd", "score-kd")]
    out = compare(variants, col, s, "objectives", command="python -m pyserini_kdspd.objectives", bias=False,
                  cross_lingual=paths)
    meta = io.read_json(out["json"])
    assert [r["trained_now"] for r in meta["rows"]] == [False, True] and meta["rows"][1]["loss"] == "score-kd"
    x_en, x_all = io.read_qrels(paths.x_en_qrels), io.read_qrels(paths.x_all_qrels)
    langs = {split_query_id(q)[1] for q in x_all}
    assert langs == {"en", "de", "zh"}
    for row in meta["rows"]:
        cross = row["cross_lingual"]
        run = io.read_run(s.root / cross["x-en"]["run"])
        top = {q: io.ranked(docs)[0][0] for q, docs in run.items() if split_query_id(q)[1] != "en"}
        assert len(top) == cross["x-en"]["queries"] == 2 * len(io.read_topics(paths.topics["en"]))
        assert cross["x-en"]["mean"]["P_1"] == pytest.approx(sum(d in x_en[q] for q, d in top.items()) / len(top))
        all_run = s.root / cross["x-all"]["run"]
        assert cross["x-all"]["queries"] == len(x_all) and cross["x-all"]["mean"]["map"] == pytest.approx(
            evaluate(all_run, paths.x_all_qrels, metrics=("map",))["map"])
        assert row["lareqa"] == pytest.approx(evaluate(s.root / row["run"]["file"], col.qrels,
                                                       metrics=tuple(row["lareqa"])).mean)  # English questions
    kdspd, scorekd = meta["rows"]
    assert kdspd["cross_lingual"]["x-en"]["p_vs_reference"] is None
    assert set(scorekd["cross_lingual"]["x-all"]["p_vs_reference"]) == {"map", "ndcg_cut_10", "recall_100"}
    assert io.read_run(s.root / kdspd["cross_lingual"]["x-all"]["run"]) != io.read_run(
        s.root / scorekd["cross_lingual"]["x-all"]["run"])
    table = out["md"].read_text(encoding="utf-8")
    assert "| X→En P@1 | X→All MAP |" in table and "max rank distance" not in table
    assert f"| {scorekd['cross_lingual']['x-all']['mean']['map']:.3f}" in table.splitlines()[3]


@pytest.mark.slow
def test_zeroshot_trains_kdspd_without_greek_gives_it_the_average_prompt_and_scores_each_group(
        driver, slice_collection):
    """``python -m pyserini_kdspd.zeroshot``: the driver's KD-SPD (trained on German, Greek and French) against the
    same trained on German and French only; both score the slice overall, per group and per language, with FLORES
    dev beside them; --readme writes the block."""
    from pyserini_kdspd import zeroshot
    from pyserini_kdspd.evaluate import evaluate
    from pyserini_kdspd.spd import Student

    col, _, qids = slice_collection
    s, root = driver, driver.root
    out = zeroshot.run_zeroshot(s, col, ["el"], students=["kdspd"], command="x")
    meta = io.read_json(out["json"])
    assert meta["held_out"] == ["el"] and meta["kept"] == ["de", "fr"]
    with_all, without = meta["rows"]
    assert (with_all["folder"], without["folder"]) == ("models/kdspd", "models/variants/kdspd-without-el")
    assert with_all["trained_on"] == ["de", "el", "fr"] and without["trained_on"] == ["de", "fr"]
    student = Student.from_pretrained(root / without["folder"])
    assert list(student.config.languages) == ["en", "de", "fr"]  # Greek documents get the average prompt

    qrels = io.read_qrels(col.qrels)
    for row in (with_all, without):
        run = root / row["run"]["file"]
        assert set(io.read_run(run)) == set(qids)
        assert row["lareqa"]["all"] == pytest.approx(evaluate(run, qrels, metrics=zeroshot.METRICS).mean)
        greek = {q: {d: g for d, g in docs.items() if d.startswith("el")} for q, docs in qrels.items()}
        assert row["lareqa"]["held_out"]["map"] == pytest.approx(evaluate(run, greek, metrics=("map",)).mean["map"])
        assert row["per_language"]["el"] == pytest.approx(row["lareqa"]["held_out"]["map"])
        log = io.read_json(root / row["folder"] / "training_log.json")["dev"][-1]["results"]
        assert row["flores"]["held_out"]["p1_en_xx"] == log["el"]["p1_en_xx"]
        assert row["flores"]["fi"]["p1_xx_en"] == log["fi"]["p1_xx_en"]
        assert log["el"]["zero_shot"] == (row is without) and log["fi"]["zero_shot"]
    assert "p_vs_with" not in with_all and set(without["p_vs_with"]) == {"all", "seen", "held_out"}
    table = out["md"].read_text(encoding="utf-8")
    assert "| KD-SPD without el | 2 languages (no el) |" in table and "| el ◦ |" in table

    readme = root / "README.md"
    readme.write_text("<!-- zeroshot:start -->\n<!-- zeroshot:end -->\n", encoding="utf-8")
    assert zeroshot.main(["--readme", str(readme), "--output-root", str(root)]) == 0
    assert "| KD-SPD without el |" in readme.read_text(encoding="utf-8")


def test_the_drivers_analyses_reach_each_command_at_its_defaults(driver, slice_collection, capsys):
    """``table2 --analyses ablations,objectives,zeroshot``: each runs its command's own entry on the driver's settings
    (shown by where each stops before any training here: the driver's students refused at another budget, the
    objectives' LAReQA data looked for in the driver's data folder, the zero-shot defaults el/th/vi checked against
    the bitext); with no LAReQA in the run, each is skipped with one line."""
    from pyserini_kdspd.table2 import TRAINING_ANALYSES, run_analyses

    col, _, _ = slice_collection
    assert set(TRAINING_ANALYSES) == {"ablations", "objectives", "zeroshot"}
    with pytest.raises(ValueError, match="trained for 2 steps, this command asks for 3"):
        run_analyses(replace(driver, train_steps=3, analyses=("ablations",)), [col], {})
    with pytest.raises(FileNotFoundError, match="lareqa"):
        run_analyses(replace(driver, analyses=("objectives",)), [col], {})
    with pytest.raises(ValueError, match=r"held-out language\(s\) th, vi: each must be a language of both the bitext"):
        run_analyses(replace(driver, analyses=("zeroshot",)), [col], {})
    assert not (driver.root / "models" / "variants" / "utspd").exists()  # nothing trained on the way
    run_analyses(replace(driver, analyses=TRAINING_ANALYSES), [replace(col, name="clef")], {})
    assert capsys.readouterr().out.count("[skip]") == 3
