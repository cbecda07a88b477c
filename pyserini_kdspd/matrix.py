"""A regression matrix in the style of Pyserini's 2CR: conditions, the commands that remake each run from
what the Table 2 driver made, and the scores expected on the driver's machine kind.

The matrix is a YAML file (``resources/2cr/<collection>.yaml``; its header comment documents the fields,
placeholders and tolerances). :func:`run_matrix` runs the commands of the chosen conditions in the
driver's output root, evaluates each run as the driver's table does (:func:`~pyserini_kdspd.evaluate.evaluate`,
depth = the driver's ``--hits``), and prints ``[OK]`` / ``[FAIL]`` per metric with the expected score, the
actual one and the tolerance, plus whether the run file is byte-identical to the driver's row (SHA-256 from
``runs/<collection>/table2.json``). :func:`write_expected` fills the expected scores from the driver's own
runs, rewriting only the ``expected``, ``driver`` and ``machine`` lines, so comments and order stay put:
expected scores are never typed by hand. ``python -m pyserini_kdspd.reproduce`` is the CLI.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from . import io

DECIMALS = 4  # expected scores are kept and compared as Pyserini's 2CR prints them
PLACEHOLDER = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")
LOOPS = ("lang", "target")  # per-language placeholders: the command (or path) repeats for each language


def default_yaml(collection: str = "lareqa") -> Path:
    """The packaged matrix of ``collection``."""
    path = Path(str(resources.files("pyserini_kdspd") / "resources" / "2cr" / f"{collection}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no packaged regression matrix for {collection!r} ({path})")
    return path


@dataclass
class Command:
    run: str
    creates: list[str]  # what the command writes (its --output unless the YAML says `creates`)


@dataclass
class Condition:
    name: str
    display: str
    output: str
    commands: list  # str | {run, creates}, as in the YAML
    made_by: str
    requires: list[str] = field(default_factory=list)
    row: str | None = None            # the driver's Table 2 row this condition remakes
    expected_from: str | None = None  # the row an index variant is held to
    tolerance: float = 0.0
    identical: bool = False           # the run must be byte-identical to the driver's row
    expected: dict | None = None

    @property
    def source_row(self) -> str:
        return self.row or self.expected_from


@dataclass
class Matrix:
    path: Path
    collection: str
    qrels: str
    relevance_level: int
    metrics: list[str]
    languages: list[str]
    source_language: str
    driver: dict | None
    machine: dict | None
    conditions: list[Condition]

    @property
    def settings(self) -> dict:
        """``$hits``, ``$threads``, ``$seed``: the driver's, from the header, else the driver's defaults."""
        from .table2 import Settings

        d, s = self.driver or {}, Settings()
        return {"hits": int(d.get("hits", s.hits)), "threads": int(d.get("threads", s.threads)),
                "seed": int(d.get("seed", s.seed))}

    def values(self) -> dict[str, str]:
        return {"runs": f"runs/{self.collection}/2cr", "indexes": f"indexes/{self.collection}/2cr",
                **{k: str(v) for k, v in self.settings.items()}}

    def select(self, names: list[str] | None) -> list[Condition]:
        if not names:
            return list(self.conditions)
        known = {c.name: c for c in self.conditions}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown condition(s) {', '.join(unknown)}; --list-conditions prints "
                             f"the {len(known)} of {self.path}")
        return [known[n] for n in names]


def load(path) -> Matrix:
    """Read and check a matrix YAML (a malformed one fails here, naming the file and the field)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("conditions"), list):
        raise ValueError(f"{path}: expected a mapping with a `conditions` list")
    missing = [k for k in ("collection", "qrels", "metrics", "languages") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    conditions, seen = [], set()
    for i, c in enumerate(data["conditions"], 1):
        absent = [k for k in ("name", "output", "commands", "made_by") if not c.get(k)]
        if absent:
            raise ValueError(f"{path}: condition {i} has no {', '.join(absent)}")
        if c["name"] in seen:
            raise ValueError(f"{path}: two conditions named {c['name']!r}")
        seen.add(c["name"])
        if not (c.get("row") or c.get("expected_from")):
            raise ValueError(f"{path}: condition {c['name']!r} names neither the driver `row` it remakes nor the "
                             f"row its scores are `expected_from`")
        conditions.append(Condition(
            name=c["name"], display=c.get("display", c["name"]), output=c["output"], commands=c["commands"],
            made_by=c["made_by"], requires=list(c.get("requires") or []), row=c.get("row"),
            expected_from=c.get("expected_from"), tolerance=float(c.get("tolerance", 0.0)),
            identical=bool(c.get("identical", False)), expected=c.get("expected")))
    return Matrix(path=path, collection=data["collection"], qrels=data["qrels"],
                  relevance_level=int(data.get("relevance_level", 1)), metrics=list(data["metrics"]),
                  languages=list(data["languages"]), source_language=data.get("source_language", "en"),
                  driver=data.get("driver"), machine=data.get("machine"), conditions=conditions)


# ------------------------------------------------------------------ placeholders
def _fill(template: str, values: dict[str, str], where: str) -> str:
    """``$name`` / ``${name}`` from ``values``; anything else that looks like a placeholder is an error
    (shell syntax such as ``$(...)`` and ``*`` passes through to the shell)."""
    out = Template(template).safe_substitute(values)
    left = sorted({m.group(1) or m.group(2) for m in PLACEHOLDER.finditer(out)})
    if left:
        raise ValueError(f"{where}: unknown placeholder(s) {', '.join('$' + x for x in left)} in {template!r}")
    return out


def _loops(m: Matrix, text: str) -> list[dict[str, str]]:
    """One value set per language when ``text`` uses ``$lang`` / ``$target``, else one empty set."""
    used = {x for x in LOOPS if re.search(rf"\$(?:{x}\b|\{{{x}\}})", text)}
    if len(used) > 1:
        raise ValueError(f"{text!r}: use $lang or $target, not both")
    if not used:
        return [{}]
    name = used.pop()
    langs = m.languages if name == "lang" else [x for x in m.languages if x != m.source_language]
    return [{name: lang} for lang in langs]


def _expand(m: Matrix, text: str, values: dict[str, str], where: str) -> list[str]:
    return [_fill(text, {**values, **loop}, where) for loop in _loops(m, text)]


def output_of(m: Matrix, c: Condition) -> str:
    return _fill(c.output, m.values(), f"{c.name}: output")


def commands(m: Matrix, c: Condition) -> list[Command]:
    """The condition's shell commands with every placeholder filled, per-language ones repeated."""
    values = {**m.values(), "output": output_of(m, c)}
    out = []
    for entry in c.commands:
        run, creates = (entry, None) if isinstance(entry, str) else (entry.get("run"), entry.get("creates"))
        if not run:
            raise ValueError(f"{m.path}: {c.name}: a command entry has no `run`")
        for loop in _loops(m, run):
            text = _fill(run, {**values, **loop}, c.name)
            if creates is None:
                found = re.search(r"--output\s+(\S+)", text)
                if not found:
                    raise ValueError(f"{m.path}: {c.name}: {text!r} has no --output; say what it writes in `creates`")
                made = [found.group(1)]
            else:
                made = [_fill(x, {**values, **loop}, c.name) for x in
                        ([creates] if isinstance(creates, str) else creates)]
            out.append(Command(text, made))
    return out


def requirements(m: Matrix, c: Condition) -> list[str]:
    return [p for r in c.requires + [m.qrels] for p in _expand(m, r, m.values(), f"{c.name}: requires")]


def missing_artifacts(m: Matrix, c: Condition, root: Path) -> list[str]:
    return [p for p in requirements(m, c) if not (root / p).exists()]


def _mtime(path: Path) -> int:
    """A file's mtime; a folder's is the newest of it and its files (an index is rewritten file by file)."""
    times = [path.stat().st_mtime_ns]
    if path.is_dir():
        times += [p.stat().st_mtime_ns for p in path.iterdir()]
    return max(times)


def _fresh(created: list[Path], required: list[Path]) -> bool:
    """Every output exists and is no older than every required artifact (the driver may have rebuilt one)."""
    if not all(p.exists() for p in created):
        return False
    newest = max((_mtime(p) for p in required), default=0)
    return all(_mtime(p) >= newest for p in created)


def _own(path: Path, root: Path, m: Matrix) -> bool:
    """Only what lies under the matrix's own folders (runs/<c>/2cr, indexes/<c>/2cr) is ever removed."""
    mine = [(root / m.values()[k]).resolve() for k in ("runs", "indexes")]
    return any(path.resolve().is_relative_to(d) for d in mine)


def _remove(paths: list[Path], root: Path, m: Matrix) -> None:
    for p in paths:
        if not _own(p, root, m):
            raise ValueError(f"{p}: a command of the matrix would replace it, but it lies outside "
                             f"{m.values()['runs']} and {m.values()['indexes']}: the driver's files are never touched")
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def command_env() -> dict[str, str]:
    """The environment of a command: ``python`` is this interpreter, and no ``PYSERINI_KDSPD_*`` setting of
    the caller's leaks in (the driver ran without them; a command that needs one sets it itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSERINI_KDSPD_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


# ------------------------------------------------------------------ checks
@dataclass
class Result:
    condition: Condition
    checks: list[tuple[str, float, float, bool]] = field(default_factory=list)  # metric, actual, expected, ok
    identical: bool | None = None     # None: no driver run to compare with
    error: str | None = None

    @property
    def failed(self) -> bool:
        return (self.error is not None or any(not ok for *_, ok in self.checks)
                or (self.condition.identical and self.identical is False))


def driver_record(root: Path, collection: str) -> dict | None:
    path = root / "runs" / collection / "table2.json"
    return io.read_json(path) if path.is_file() else None


def evaluate_run(m: Matrix, run: Path, root: Path) -> dict[str, float]:
    """The run's scores as the driver's table computes them (depth = the driver's --hits)."""
    from .evaluate import evaluate

    ev = evaluate(str(run), str(root / m.qrels), depth=m.settings["hits"], metrics=m.metrics,
                  relevance_level=m.relevance_level)
    return {k: ev[k] for k in m.metrics}


def within(actual: float, expected: float, tolerance: float) -> bool:
    return abs(round(actual, DECIMALS) - float(expected)) <= tolerance + 0.5 * 10 ** -(DECIMALS + 2)


def check(m: Matrix, c: Condition, root: Path, record: dict | None) -> Result:
    res = Result(c)
    run = root / output_of(m, c)
    if not run.is_file():
        res.error = f"no run {run}: run the condition without --skip-run"
        return res
    if not c.expected:
        res.error = (f"no expected scores in {m.path}: run `python -m pyserini_kdspd.reproduce --write-expected` "
                     f"after the driver has made the {c.source_row!r} row")
        return res
    actual = evaluate_run(m, run, root)
    for metric in m.metrics:
        if metric not in c.expected:
            res.error = f"{m.path}: {c.name} has no expected {metric}: rerun --write-expected"
            return res
        res.checks.append((metric, actual[metric], float(c.expected[metric]),
                           within(actual[metric], c.expected[metric], c.tolerance)))
    if c.row and record and c.row in record.get("runs", {}):
        res.identical = io.sha256_file(run) == record["runs"][c.row]["sha256"]
    return res


# ------------------------------------------------------------------ running
def run_condition(m: Matrix, c: Condition, root: Path, display: bool = False) -> str | None:
    """Run what is missing or stale of the condition's commands; an error message, or None."""
    missing = missing_artifacts(m, c, root)
    if missing:
        return (f"missing {', '.join(missing)}: made by the Table 2 driver, `{c.made_by}` (all of it: "
                f"scripts/reproduce_table2.sh) with --output-root {root}")
    inputs = [root / p for p in requirements(m, c)]
    for cmd in commands(m, c):
        made = [root / p for p in cmd.creates]
        fresh = _fresh(made, inputs)
        inputs += made  # what a later command reads (a fused run: the per-language runs) must not be newer
        if fresh:
            print(f"  reusing {', '.join(cmd.creates)}", flush=True)
            continue
        _remove(made, root, m)
        for p in made:
            p.parent.mkdir(parents=True, exist_ok=True)
        if display:
            print(f"\n```bash\n{format_command(cmd.run)}\n```\n", flush=True)
        else:
            print(f"  running: {cmd.run[:150]}{' ...' if len(cmd.run) > 150 else ''}", flush=True)
        proc = subprocess.run(cmd.run, shell=True, cwd=root, env=command_env(), executable="/bin/bash")
        absent = [str(p) for p in made if not p.exists()]
        if proc.returncode != 0 or absent:
            _remove(made, root, m)  # a half-written output must not be reused next time
            return f"exit {proc.returncode}" + (f", wrote no {', '.join(absent)}" if absent else "") + f": {cmd.run}"
    return None


def format_command(cmd: str) -> str:
    """One flag per line, as Pyserini's 2CR displays commands."""
    return re.sub(r" (--(?:index|topics|encoder|encoded-queries|output|runs|faiss-index|lucene-flat|lucene-hnsw"
                  r"|translation|method|hits)\b)", r" \\\n  \1", cmd)


def run_matrix(m: Matrix, names: list[str] | None, root: Path, dry_run: bool = False, skip_run: bool = False,
               display: bool = False) -> int:
    """Run (or with ``dry_run`` only print) the chosen conditions and check them; 1 if any check failed."""
    from .evaluate import METRIC_LABELS

    start = time.time()
    chosen = m.select(names)
    record = driver_record(root, m.collection)
    if not dry_run:
        _machine_note(m)
    results: list[Result] = []
    for c in chosen:
        print(f'# Running condition "{c.name}": {c.display}\n', flush=True)
        if dry_run:
            for p in missing_artifacts(m, c, root):
                print(f"  [missing] {p} (made by `{c.made_by}`)")
            for cmd in commands(m, c):
                print(f"```bash\n{format_command(cmd.run)}\n```")
            print()
            continue
        error = None if skip_run else run_condition(m, c, root, display)
        res = Result(c, error=error) if error else check(m, c, root, record)
        results.append(res)
        for metric, actual, expected, ok in res.checks:
            print(f"    {METRIC_LABELS.get(metric, metric):8}: {actual:.4f} {'[OK]' if ok else '[FAIL]'} "
                  f"expected {expected:.4f}, tolerance {c.tolerance:g}")
        if res.error:
            print(f"    [FAIL] {res.error}")
        if res.identical is not None:
            entry = record["runs"][c.row]
            print(f"    run file: {'[SAME]' if res.identical else '[FAIL]' if c.identical else '[DIFF]'} "
                  f"{'byte-identical to' if res.identical else 'differs from'} the driver's {c.row!r} run "
                  f"({entry['file']}, sha256 {entry['sha256'][:12]})"
                  + (" which it must equal" if c.identical and not res.identical else ""))
        elif c.row and not res.error:
            print(f"    run file: the driver recorded no {c.row!r} run (runs/{m.collection}/table2.json)")
        print(flush=True)
    if dry_run:
        print(f"dry run: {len(chosen)} conditions, nothing run")
        return 0
    checks = [ok for r in results for *_, ok in r.checks]
    compared = [r for r in results if r.identical is not None]
    failed = [r.condition.name for r in results if r.failed]
    print(f"Summary: {len(results)} conditions, {len(checks)} checks: {sum(checks)} [OK], "
          f"{len(checks) - sum(checks)} [FAIL]; run files byte-identical to the driver's: "
          f"{sum(r.identical for r in compared)} of {len(compared)}; "
          f"failed conditions: {', '.join(failed) if failed else 'none'} ({time.time() - start:.0f} s)")
    return 1 if failed else 0


def _machine_note(m: Matrix) -> None:
    """A note when this CPU is not of the kind the expected scores were recorded on (dense kernels differ)."""
    if not m.machine:
        return
    from .runtime import cpu_info  # imports torch: only when there is a machine to compare with

    here = cpu_info()
    keys = ("flags", "native_bf16")
    if any(m.machine.get(k) != here.get(k) for k in keys):
        print(f"[note] the expected scores were recorded on {m.machine.get('model')} (flags "
              f"{' '.join(m.machine.get('flags') or []) or 'none'}, native bf16 {m.machine.get('native_bf16')}); "
              f"this machine: {here['model']} (flags {' '.join(here['flags']) or 'none'}, native bf16 "
              f"{here['native_bf16']}): dense conditions may move by more than their tolerance\n")


# ------------------------------------------------------------------ expected scores
def expected_scores(m: Matrix, root: Path) -> tuple[dict, dict[str, dict | None]]:
    """The driver's record and, per condition, its row's scores (None: the driver made no such row).
    A run file that no longer matches the SHA-256 the driver recorded is refused."""
    record = driver_record(root, m.collection)
    if record is None:
        raise FileNotFoundError(f"{root / 'runs' / m.collection / 'table2.json'}: missing; the Table 2 driver "
                                f"writes it (`python -m pyserini_kdspd.table2 --output-root {root}`)")
    scores: dict[str, dict | None] = {}
    for c in m.conditions:
        entry = record["runs"].get(c.source_row)
        if entry is None:
            scores[c.name] = None
            continue
        run = root / entry["file"]
        if io.sha256_file(run) != entry["sha256"]:
            raise ValueError(f"{run}: its SHA-256 is not the one the driver recorded in table2.json; the run "
                             f"changed since the table was made: rerun the driver")
        scores[c.name] = {k: round(v, DECIMALS) for k, v in evaluate_run(m, run, root).items()}
    return record, scores


def _flow(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10 ** 9, sort_keys=False,
                          allow_unicode=True).strip().removesuffix("...").strip()


def write_expected(m: Matrix, root: Path) -> dict[str, dict | None]:
    """Rewrite the ``expected`` line of every condition and the ``driver`` / ``machine`` header lines of the
    matrix from the driver's runs under ``root``; everything else in the file stays byte for byte."""
    import yaml

    record, scores = expected_scores(m, root)
    driver = {k: record.get(k) for k in ("command", "seed", "hits", "threads", "mode", "train_steps", "finished")}
    driver["versions"] = record.get("versions", {})
    header = {"driver": driver, "machine": record["cpu"]}
    lines = m.path.read_text(encoding="utf-8").splitlines(keepends=True)
    current, done = None, set()
    for i, line in enumerate(lines):
        end = "\n" if line.endswith("\n") else ""
        if (hit := re.match(r"^(driver|machine):", line)) and hit.group(1) in header:
            lines[i] = f"{hit.group(1)}: {_flow(header[hit.group(1)])}{end}"
            done.add(hit.group(1))
        elif hit := re.match(r"^\s*- name:\s*(.+?)\s*$", line):
            current = yaml.safe_load(hit.group(1))
        elif current is not None and (hit := re.match(r"^(\s+)expected:", line)):
            lines[i] = f"{hit.group(1)}expected: {_flow(scores[current])}{end}"
            done.add(current)
    absent = [k for k in [*header, *scores] if k not in done]
    if absent:
        raise ValueError(f"{m.path}: no one-line `driver:` / `machine:` header or `expected:` line for "
                         f"{', '.join(absent)}: add `expected: null` (resp. `driver: null`) where it belongs")
    text = "".join(lines)
    check_m = yaml.safe_load(text)  # the rewrite must say exactly what was meant
    got = {c["name"]: c.get("expected") for c in check_m["conditions"]}
    if got != scores or check_m["driver"] != driver or check_m["machine"] != record["cpu"]:
        raise RuntimeError(f"{m.path}: the rewritten YAML does not read back as written; left unchanged")
    with io.atomic_write(m.path) as f:
        f.write(text)
    return scores
