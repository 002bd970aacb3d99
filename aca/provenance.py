"""Provenance stamps: which code made a run record.

Every run record (``result.json``, the tasks' own JSON records, the benchmark's
``bench.json``, the CSV tables of scripts, ``REPRODUCE.txt``) carries ``stamp()``:
the git commit of the checkout ``aca`` runs from, whether the code had uncommitted
changes, a hash of that code exactly as it ran, and the Python, torch and platform
versions. ``scripts/reproduce.py check`` compares each record's hash with the code
now and lists the records made by other code ("stale").

The code is what makes a record: the files under ``CODE_PATHS`` (the library, the
configs and presets it runs, and the scripts that write records: the benchmarks,
``solver_robustness.py``, ``reproduce.py``, whose ``summarize`` writes the cross-run
tables), without the reporting code in ``REPORTING`` that only renders, judges or
checks records (drawing a table differently does not change a record; the summaries
in ``aca/report`` that write records, and the plan with their commands, do). Its hash
is a SHA-1 over each file's path and git blob id, so it is the same for a clean
checkout of a commit and for a working tree that holds the same files, committed or
not. Outside a git checkout the git facts read ``"unknown"``; nothing fails.

Generated data (the Hopper trajectories) is made by other software too (dm_control,
mujoco): its loader notes a checksum (``note_data``) that the run's stamp carries as
``data``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

UNKNOWN = "unknown"
CODE_DIRS = ("aca", "configs", "experiments")
#: the scripts that write run records (scripts/reproduce.py: the ``summarize`` tables)
RECORD_SCRIPTS = tuple(f"scripts/{name}.py" for name in (
    "bench_cost_scaling", "bench_diffrax", "bench_gradients", "bench_per_sample", "diffrax_peer",
    "gpu_check", "gradient_accuracy_map", "reproduce", "solver_robustness",
    "timeseries_baselines"))
CODE_PATHS = CODE_DIRS + RECORD_SCRIPTS
#: the reporting code that writes no record: renders, judges or checks them
REPORTING = tuple(f"aca/report/{name}.py" for name in
                  ("claims", "claims_cost", "drift", "figures", "records", "render",
                   "tables", "verdicts"))
#: the code, in words (messages)
CODE_WHERE = f"{', '.join(p + '/' for p in CODE_DIRS)} and the record-writing scripts"
#: the stamp fields a CSV record carries as columns, one stamp per row
CSV_FIELDS = ("commit", "dirty", "code")


_DATA: dict[str, str] = {}


def data_checksum(data: Any) -> str:
    """SHA-256 of a tensor's values, dtype and shape (as stored on the CPU)."""
    import torch

    array = data.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{array.dtype} {tuple(array.shape)}\n".encode())
    digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def note_data(name: str, data: Any) -> str:
    """Record that this process used generated data set ``name`` (its checksum is returned
    and goes into ``data_stamp``)."""
    _DATA[name] = data_checksum(data)
    return _DATA[name]


def forget_data() -> None:
    """Start a new run: no generated data used yet."""
    _DATA.clear()


def data_stamp() -> dict[str, Any]:
    """``{"data": {name: checksum}}`` of the generated data this process used (or ``{}``)."""
    return {"data": dict(sorted(_DATA.items()))} if _DATA else {}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(root: Path, *args: str) -> str | None:
    """stdout of ``git -C root ARGS``, or None when git or the repository is missing."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def repo_root(package_dir: Path | None = None) -> Path | None:
    """The git checkout this ``aca`` package is imported from, or None (an installed
    copy, even one inside another repository, has no commit of its own)."""
    package_dir = package_dir or Path(__file__).resolve().parent
    root = package_dir.parent
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None
    return root


def is_code(path: str) -> bool:
    """Whether a repository path counts as code that makes records."""
    inside = any(path == p or path.startswith(p + "/") for p in CODE_PATHS)
    return inside and not any(path == p or path.startswith(p + "/") for p in REPORTING)


def blob_id(path: Path) -> str:
    """git's object id of a file as it is now (a symbolic link: of its target's name)."""
    content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def code_hash(blobs: Iterable[tuple[str, str]]) -> str:
    """One hash of ``(path, blob id)`` pairs, independent of their order."""
    digest = hashlib.sha1()
    for path, blob in sorted(blobs):
        digest.update(f"{path}\0{blob}\n".encode())
    return digest.hexdigest()


def working_code(root: Path) -> str | None:
    """The code hash of the working tree: tracked and untracked (not ignored) files."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                  *CODE_PATHS)
    if listed is None:
        return None
    paths = {p for p in listed.split("\0") if p and is_code(p)}
    return code_hash((p, blob_id(root / p)) for p in paths if os.path.lexists(root / p))


def committed_code(root: Path, commit: str = "HEAD") -> str | None:
    """The code hash of a commit."""
    listed = _git(root, "ls-tree", "-r", "-z", commit, "--", *CODE_PATHS)
    if listed is None:
        return None
    blobs = []
    for entry in filter(None, listed.split("\0")):
        info, path = entry.split("\t", 1)
        if is_code(path):
            blobs.append((path, info.split()[2]))
    return code_hash(blobs)


def code_commits_since(root: Path | None, commit: str) -> int | None:
    """How many commits after ``commit`` changed the code (None: unknown)."""
    if root is None or commit == UNKNOWN:
        return None
    count = _git(root, "rev-list", "--count", f"{commit}..HEAD", "--", *CODE_PATHS,
                 *(f":(exclude){path}" for path in REPORTING))
    return int(count) if count and count.strip().isdigit() else None


def make_stamp(root: Path | None) -> dict[str, Any]:
    """The stamp of code in checkout ``root`` (None: not a checkout, git facts unknown)."""
    import torch

    commit = _git(root, "rev-parse", "HEAD") if root is not None else None
    code = working_code(root) if commit is not None else None
    head = committed_code(root) if commit is not None else None
    return {
        "commit": commit.strip() if commit else UNKNOWN,
        "dirty": UNKNOWN if code is None or head is None else code != head,
        "code": code or UNKNOWN,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


@functools.cache
def stamp() -> dict[str, Any]:
    """The stamp of the code this process runs, taken once (at its first call)."""
    return make_stamp(repo_root())


def short(stamp_: dict[str, Any] | None) -> str:
    """``commit`` abbreviated, with ``+changes`` when the tree had uncommitted code."""
    if not stamp_:
        return "no stamp"
    commit = str(stamp_.get("commit", UNKNOWN))
    commit = commit[:10] if commit != UNKNOWN else commit
    return commit + ("+changes" if stamp_.get("dirty") in (True, "True") else "")  # CSV: text


def describe(stamp_: dict[str, Any]) -> str:
    """One line for a log file: commit, uncommitted changes, code hash and versions."""
    changes = {True: "with uncommitted changes", False: "clean", UNKNOWN: "changes unknown"}
    return (f"commit {stamp_['commit']} ({changes.get(stamp_['dirty'], stamp_['dirty'])} under "
            f"{CODE_WHERE}), code {stamp_['code']}; Python "
            f"{stamp_['python']}, torch {stamp_['torch']}, {stamp_['platform']}, {stamp_['cpu']}")


def csv_cells(stamp_: dict[str, Any] | None) -> list[Any]:
    """A stamp as the ``CSV_FIELDS`` columns of a table row."""
    return [UNKNOWN if not stamp_ else stamp_.get(key, UNKNOWN) for key in CSV_FIELDS]


def data_cell(stamp_: dict[str, Any] | None) -> str:
    """A stamp's generated data as one CSV cell, ``name=checksum`` joined by ``;`` (or "")."""
    return ";".join(f"{name}={checksum}" for name, checksum in
                    ((stamp_ or {}).get("data") or {}).items())


def command_line() -> str:
    """The command that started this process, as a user would type it again."""
    program = Path(sys.argv[0]).name
    prefix = ["python", "-m", "aca.cli"] if program == "cli.py" else [program]
    return shlex.join(prefix + sys.argv[1:])


def run_summary(cfg: Any) -> dict[str, Any]:
    """What a result.json says about how it was made, and by which code (the stamp)."""
    return {"task": cfg.task.name, "method": cfg.method.name,
            "solver": OmegaConf.to_container(cfg.solver, resolve=True), "seed": cfg.seed,
            "mode": cfg.mode, "command": command_line(),
            "provenance": {**stamp(), **data_stamp()}}
