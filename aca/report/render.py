"""Rendering: the paper's tables as Markdown and LaTeX (``paper_tables.md/.tex``),
results/README.md (every target's tables, figures, commands, the machine and versions)
and the Results section of the repository's README, all from the run records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aca.report.claims import claims_table
from aca.report.format import format_cell, markdown_table
from aca.report.plan import TARGETS, machine, plan
from aca.report.records import STALE_MARK, Staleness, current_code, stale_records
from aca.report.tables import Records, Table, all_tables


def table_markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", markdown_table(table.headers, table.rows).rstrip()]
    lines += [""] + table.notes if table.notes else []
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "≈": r"$\approx$", "α": r"$\alpha$", "μ": r"$\mu$",
                 "−": "-", "×": r"$\times$", "·": r"$\cdot$", "Δ": r"$\Delta$", "²": r"$^2$",
                 "|": r"$|$", "<": r"$<$", "–": "--", "‖": r"$\|$", STALE_MARK: r"\dag{}"}


def latex_escape(text: Any) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in str(text))


def table_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    body = [" & ".join(latex_escape(format_cell(c) if not isinstance(c, str) else c)
                       for c in row) + r" \\" for row in table.rows]
    return "\n".join([
        r"\begin{table}[ht]", r"\centering", r"\small",
        rf"\caption{{{latex_escape(table.title)}}}", rf"\label{{tab:{table.key}}}",
        r"\begin{tabular}{" + "l" * len(table.headers) + "}", r"\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def _figures(root: Path, folder: str) -> list[Path]:
    base = root / folder
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.png") if "runs" not in p.relative_to(base).parts)


def _command_notes(root: Path, folder: str) -> list[Path]:
    """The task's own notes (COMMAND.txt, README.md, timings) and REPRODUCE.txt logs."""
    base = root / folder
    if not base.is_dir():
        return []
    return sorted(p for pattern in ("*.txt", "README.md") for p in base.rglob(pattern)
                  if "runs" not in p.relative_to(base).parts)


def results_readme(root: Path, tables: list[Table], problems: list[str],
                   stale: Sequence[Staleness] = ()) -> str:
    """results/README.md: what each table and figure is, its commands, machine, versions."""
    info = machine()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Results: the paper's tables and figures, regenerated",
        "",
        "Rendered by `python scripts/reproduce.py render` from the run records in this folder",
        f"on {date}: CPU {info['cpu']} ({info['cores']} cores), GPU {info['gpu']}, "
        f"{info['os']}; Python {info['python']}, torch {info['torch']}, aca {info['aca']}.",
        "The records themselves were made by the commands below (each target's REPRODUCE.txt /",
        "COMMAND.txt / README.md says when, where and how long), and each record's provenance",
        "stamp names the code that made it: cells of records made by other code than the current",
        "are marked †, and `python scripts/reproduce.py check` lists those records. The paper's",
        "numbers come from docs/paper.md (≈: read off the paper's plots).",
        "",
        "- All tables: [paper_tables.md](paper_tables.md) (LaTeX: "
        "[paper_tables.tex](paper_tables.tex)).",
        "- Regenerate one target: `python scripts/reproduce.py run TARGET --scale cpu` "
        "(`--dry-run` prints its commands; `--scale smoke` checks the pipeline in seconds into "
        "`outputs/smoke`, `--scale paper` needs a GPU and the data sets); then "
        "`python scripts/reproduce.py render`.",
        "- CIFAR targets read `data/cifar-10-batches-py` / `data/cifar-100-python` (or "
        "`$ACA_DATA_DIR`): `python scripts/download_cifar.py cifar10 cifar100` on a machine with "
        "internet. Mujoco needs the `mujoco` extra (dm_control).",
        "",
    ]
    if problems:
        lines += ["## Missing or partial records", ""] + [f"- {p}" for p in problems] + [""]
    if stale:
        by_target: dict[str, list[Staleness]] = {}
        for item in stale:
            by_target.setdefault(item.rerun, []).append(item)
        lines += ["## Stale records", "",
                  f"Made by other code than the current one; their cells are marked {STALE_MARK}. "
                  "`python scripts/reproduce.py check` lists each record and why.", ""]
        lines += [f"- {len(items)} record(s) of `{items[0].target}`: `{command}`"
                  for command, items in by_target.items()] + [""]
    lines += ["## Targets", ""]
    for name, spec in TARGETS.items():
        lines += [f"### `{name}`: {spec.what}", ""]
        keys = spec.tables
        linked = [t for t in tables if t.key in keys]
        if linked:
            lines.append("- Tables: " + ", ".join(
                f"[{t.title}](paper_tables.md#{_anchor(t.title)})" for t in linked))
        figures = _figures(root, spec.folder) if not name.endswith("_seeds") else []
        if figures:
            lines.append("- Figures: " + ", ".join(
                f"[{p.relative_to(root)}]({p.relative_to(root)})" for p in figures))
        notes = _command_notes(root, spec.folder) if not name.endswith("_seeds") else []
        if notes:
            lines.append("- Commands, timings and notes: " + ", ".join(
                f"[{p.relative_to(root)}]({p.relative_to(root)})" for p in notes))
        lines += ["", "```bash"]
        for scale in (s for s in ("cpu", "paper") if s in spec.scales):
            lines.append(f"python scripts/reproduce.py run {name} --scale {scale}   # runs:")
            lines += [f"    {step.shell()}" for step in plan(name, scale)]
        lines += ["```", ""]
    return "\n".join(lines)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


HEADLINE_TABLES = ("claims", "toy", "three_body", "digits_methods")
HEADLINE_FIGURE = "vdp/vdp_reconstruction.png"


def readme_section(tables: list[Table]) -> str:
    """The README's Results section: headline tables and one figure, from the records."""
    chosen = [t for key in HEADLINE_TABLES for t in tables if t.key == key]
    parts = ["## Results", "",
             "Regenerated from the run records in `results/` by "
             "`python scripts/reproduce.py render`; every table and figure, the commands that "
             "made them, the machine and the versions are in [results/README.md]"
             "(results/README.md). The paper's numbers stand beside ours.", ""]
    for table in chosen:
        parts.append(table_markdown(table).replace("### ", "#### ", 1))
    parts += ["![Van der Pol: forward and reverse-time trajectories](results/"
              f"{HEADLINE_FIGURE})", ""]
    return "\n".join(parts)


def replace_section(text: str, section: str, heading: str = "## Results") -> str:
    """``text`` with the Markdown section under ``heading`` (up to the next ``## ``) replaced."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    end = text.find("\n## ", start + len(heading) + 2)
    tail = text[end:] if end >= 0 else "\n"
    return text[:start + 1] + section.rstrip("\n") + "\n" + tail


def render(root: Path, readme: Path | None = None) -> list[str]:
    """Write paper_tables.md/.tex and README.md under ``root`` (and the Results section of
    ``readme`` when given); return the missing/partial-record messages (stale records are
    marked, listed in README.md and counted on stdout)."""
    code_now = current_code()
    records = Records(root, code_now=code_now)
    tables = [claims_table(records), *all_tables(records)]
    stale = stale_records(root, code_now)[0] if code_now is not None else []
    root.mkdir(parents=True, exist_ok=True)
    header = ("# The paper's tables, regenerated\n\nOur numbers beside the paper's (docs/paper.md; "
              "≈: read off its plots). \"missing\": no run record yet (see README.md).\n\n")
    (root / "paper_tables.md").write_text(header + "\n".join(table_markdown(t) for t in tables))
    (root / "paper_tables.tex").write_text(
        "% Generated by `python scripts/reproduce.py render`; needs \\usepackage{booktabs}.\n"
        + "\n".join(table_latex(t) for t in tables))
    (root / "README.md").write_text(results_readme(root, tables, records.problems, stale))
    if stale:
        print(f"{len(stale)} stale record(s), their cells marked {STALE_MARK}: "
              "python scripts/reproduce.py check lists them")
    if readme is not None and readme.is_file():
        readme.write_text(replace_section(readme.read_text(), readme_section(tables)))
    return records.problems
