"""The plugin only adds to Pyserini: every Pyserini object is the one Pyserini defines.

Two fresh interpreters of this environment import the same Pyserini modules: one
with the start-up hook (as every user of the environment gets it), one with the
hook's finder removed before Pyserini loads. Their Pyserini objects must be the
same code, and the hooked encoder maps must differ only by a leading ``kdspd`` and a trailing ``muse``.
"""
import json
import subprocess

import pytest

PROBE = r"""
import json, sys
if sys.argv[1] == "bare":  # no hook: remove our finder, set up only what Pyserini needs to import
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "pyserini_kdspd._startup"]
    from pyserini_kdspd import _java
    _java.prepare_environment(); _java.configure_jvm()
import pyserini.encode as pe
import pyserini.encode.__main__, pyserini.search.faiss, pyserini.search.faiss.__main__
import pyserini.search.faiss._searcher as fs
import pyserini.search.lucene, pyserini.index.lucene, pyserini.index.faiss, pyserini.fusion
import pyserini.eval.trec_eval

def where(obj):
    # The file and line of a function's code, or of every function a class defines itself.
    fn = getattr(obj, "__func__", obj)
    if isinstance(obj, type):
        return {k: where(v) for k, v in sorted(vars(obj).items()) if callable(v) or isinstance(v, (classmethod, staticmethod))}
    code = getattr(fn, "__code__", None)
    return [code.co_filename, code.co_firstlineno] if code else repr(type(obj))

def ident(cls):
    return None if cls is None else [cls.__module__, cls.__qualname__, where(cls)]

modules = {m: sys.modules[m] for m in sorted(sys.modules) if m == "pyserini" or m.startswith("pyserini.")}
not_own = []  # module attributes that are not what the module path says they are
for name, mod in modules.items():
    for attr, val in vars(mod).items():
        home = getattr(val, "__module__", None)
        if isinstance(val, type) and home and home.startswith("pyserini") and home in sys.modules:
            if getattr(sys.modules[home], val.__name__, val) is not val:
                not_own.append(f"{name}.{attr}")
out = {
    "doc_map": [[k, ident(v)] for k, v in pe.document_encoder_class_map.items()],
    "query_map": [[k, ident(v)] for k, v in pe.query_encoder_class_map.items()],
    "auto": [ident(pe.AutoDocumentEncoder), ident(pe.AutoQueryEncoder)],
    "faiss_searcher": ident(fs.FaissSearcher),
    "init": [where(pyserini.encode.__main__.init_encoder), where(pyserini.search.faiss.__main__.init_query_encoder)],
    "not_own": not_own,
    "files": sorted({f for m in modules.values() for f in [getattr(m, "__file__", None)] if f}),
}
print(json.dumps(out))
"""


def _probe(python, mode):
    proc = subprocess.run([python, "-c", PROBE, mode], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes(python):
    return _probe(python, "hooked"), _probe(python, "bare")


def test_pyserini_objects_are_pyserinis_own(probes):
    hooked, bare = probes
    assert hooked["files"] == bare["files"]
    assert hooked["auto"] == bare["auto"]
    assert hooked["faiss_searcher"] == bare["faiss_searcher"]
    assert hooked["init"] == bare["init"]
    assert hooked["not_own"] == [] == bare["not_own"]
    # No Pyserini class in the maps has code from this plugin (a wrapper subclass or a replaced method would).
    for _, ident in hooked["doc_map"] + hooked["query_map"] + [[None, i] for i in hooked["auto"]]:
        if ident and ident[0].startswith("pyserini."):
            assert not any("pyserini_kdspd" in v[0] for v in ident[2].values() if isinstance(v, list)), ident

def test_maps_gain_only_a_leading_kdspd_and_a_trailing_muse(probes):
    hooked, bare = probes
    for key in ("doc_map", "query_map"):
        first, *rest, last = hooked[key]
        assert first[0] == "kdspd" and first[1][0] == "pyserini_kdspd.encoders"
        assert last[0] == "muse" and last[1][0] == "pyserini_kdspd.encoders"
        assert rest == bare[key]
