"""Reporting: everything that turns run folders into tables, figures and results/.

- ``format``: table cells, Markdown/CSV/JSON writers, the one figure-saving function
- ``paper``: the paper's numbers, in one place
- ``figures``: every figure (the runs' own and the cross-run ones)
- ``runs``: the one reader of run folders (result.json, metrics.csv, config.yaml)
- ``summaries``: cross-run tables, records and figures built from run folders
- ``plan``: the reproduction plan as data (targets, their commands and records)
- ``records``: the committed run records, their provenance stamps and staleness
- ``drift``: rerunning the cheap deterministic targets against the committed records
- ``tables``, ``render``: the paper's tables from the records, and results/'s README
- ``cli``: ``python scripts/reproduce.py`` (run, render, list, check, drift, summarize)

Tasks use only ``format``, ``paper`` and ``figures`` (they draw their own run's figures
into their run folder); everything else reads run folders and writes results/. A
record's code hash (aca.provenance) covers the modules that write records (``summaries``
and what it uses, ``plan``, ``cli``) and leaves out those that only render, judge or
check them (``provenance.REPORTING``).
"""
