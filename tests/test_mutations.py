"""scripts/mutate.py stays runnable: every mutation's anchor occurs exactly once in the
code it edits, and the tests it names exist (a moved anchor or a renamed test would turn
the mutation into an error or an empty run, found only by a 26-minute mutation run)."""

from __future__ import annotations

import re

from conftest import REPO_ROOT, script_module


def test_every_anchor_occurs_once_and_every_named_test_exists() -> None:
    with script_module("mutate") as mutate:
        names = [m.name for m in mutate.MUTATIONS]
        assert len(names) == len(set(names)), "two mutations share a name"
        problems = [f"{m.name}: {error}" for m in mutate.MUTATIONS
                    for error in mutate.anchor_errors(m, REPO_ROOT)]
        for m in mutate.MUTATIONS:
            for test in m.tests:
                path, _, function = test.partition("::")
                source = REPO_ROOT / path
                if not source.is_file():
                    problems.append(f"{m.name}: {path} does not exist")
                elif function and not re.search(rf"def {re.escape(function.split('[')[0])}\b",
                                                source.read_text()):
                    problems.append(f"{m.name}: {test} does not exist")
    assert not problems, "\n".join(problems)
