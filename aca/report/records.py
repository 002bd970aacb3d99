"""The committed run records under results/ and their provenance: which records each target
declares, which code made each one, and ``check`` (the records made by other code than
the current: stale)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aca import provenance
from aca.errors import ConfigError
from aca.report.plan import REPO_ROOT, TARGETS

STALE_MARK = "†"
STALE_NOTE = (f"†: a stale record, made by other code than the current {provenance.CODE_WHERE} "
              "(or not stamped); `python scripts/reproduce.py check` lists them.")


def stamp_of(record: Any) -> dict | None:
    """The provenance stamp of a JSON record or of a CSV table's row, or None."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("provenance"), dict):
        return record["provenance"]
    if all(record.get(key) not in (None, "") for key in provenance.CSV_FIELDS):
        return {key: record[key] for key in provenance.CSV_FIELDS}
    return None


def is_current(stamp: dict | None, code_now: str) -> bool:
    """Whether a record was made by exactly the code there is now."""
    return stamp is not None and stamp.get("code") == code_now != provenance.UNKNOWN


def current_code() -> str | None:
    """The code hash of the checkout aca runs from, or None outside a git checkout."""
    root = provenance.repo_root()
    return provenance.working_code(root) if root is not None else None


def record_stamps(path: Path) -> list[dict | None]:
    """The stamp of a JSON record, or of each row of a CSV record ([None]: unreadable)."""
    try:
        if path.suffix == ".json":
            return [stamp_of(json.loads(path.read_text()))]
        with path.open(newline="") as handle:
            return [stamp_of(row) for row in csv.DictReader(handle)] or [None]
    except (OSError, ValueError):
        return [None]


def find_records(root: Path) -> list[tuple[str, Path]]:
    """``(target, path)`` of every run record under ``root`` that a target declares."""
    found: dict[Path, str] = {}
    for name, spec in TARGETS.items():
        for pattern in spec.records:
            for prefix in ("", "paper/"):
                for path in sorted((root / spec.folder).glob(prefix + pattern)):
                    found.setdefault(path, name)
    return [(name, path) for path, name in found.items()]


@dataclass
class Staleness:
    """One record that was not made by the current code, and why."""

    target: str
    path: Path
    reason: str

    @property
    def rerun(self) -> str:
        scale = " --scale paper" if "paper" in self.path.parts else ""
        return f"python scripts/reproduce.py run {self.target}{scale}"


def _why_stale(stamps: list[dict | None], code_now: str) -> str | None:
    old = [stamp for stamp in stamps if not is_current(stamp, code_now)]
    if not old:
        return None
    rows = f" ({len(old)} of {len(stamps)} rows)" if len(stamps) > 1 else ""
    stamp = old[0]
    if stamp is None:
        return "no provenance stamp (made before stamps existed)" + rows
    if stamp.get("code") in (None, provenance.UNKNOWN):
        return "made outside a git checkout: its code is unknown" + rows
    since = provenance.code_commits_since(provenance.repo_root(), str(stamp.get("commit")))
    changed = f"; {since} commit(s) changed the code since" if since else ""
    return f"made by {provenance.short(stamp)}, code {str(stamp['code'])[:10]}{changed}{rows}"


def stale_records(root: Path, code_now: str) -> tuple[list[Staleness], int]:
    """The records under ``root`` not made by ``code_now``, and how many records there are."""
    records = find_records(root)
    stale = []
    for target, path in records:
        reason = _why_stale(record_stamps(path), code_now)
        if reason is not None:
            stale.append(Staleness(target, path, reason))
    return stale, len(records)


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def check(root: Path, strict: bool = False) -> int:
    """List the records under ``root`` made by other code than the current (stale); with
    ``strict``, return 1 when there is one."""
    code_now = current_code()
    if code_now is None:
        raise ConfigError("check needs the git checkout aca is imported from (pip install "
                          "-e .); outside one the code that made a record is unknown")
    head = provenance.make_stamp(provenance.repo_root())
    print(f"code now: {provenance.short(head)}, code {code_now[:10]} ({provenance.CODE_WHERE}; "
          "not the reporting code)")
    stale, total = stale_records(root, code_now)
    for item in stale:
        print(f"stale  {shown(item.path)}: {item.reason}")
    print(f"{len(stale)} of {total} records under {shown(root)} are stale"
          + (", rerun them with the current code:" if stale else "."))
    for command in dict.fromkeys(item.rerun for item in stale):
        print(f"  {command}")
    return 1 if strict and stale else 0
