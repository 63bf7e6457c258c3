"""Reading finished runs back: a multirun directory becomes tables, figures and paper tables.

What reads what:
- `aggregate` reads each job directory (`.hydra/overrides.yaml`, `metrics.json` or
  `error.txt`) into records grouped by the swept keys, and renders the mean ± std table;
- `paper_table` lays those groups out like a paper's table beside its targets
  (`clrun/papers/<paper>.csv`);
- `figures` draws the sweep's figures and `report.md` from the same groups;
- `cli` is `clrun-report DIR` over the three; `reproduce` is `clrun-reproduce EXPERIMENT`,
  which runs an experiment's sweep and then that report;
- `sweep_status` is the Hydra callback that makes a multirun with failed jobs exit 1.

This package imports clrun's core (results, plots, errors, paths); the core never imports it
(tests/test_imports.py). One run's own printed summary is the core's `clrun.summary`.
"""
