"""Figures of the paper from the tidy tables that `mrl-train`, `mrl-eval` and `mrl-aggregate` write.

- `load`: find and read the tables under a results folder into normalised DataFrames, and the
  paper's reference numbers;
- `plots`: one function per figure (DataFrames in, a `Drawn` figure with its table and the notes
  of what it could not draw out), and the fixed method palette;
- `html`: the self-contained HTML page of every figure and its table;
- `provenance`: what travels with a run (config, seed, git revision, hardware, wall time);
- `cli`: the `mrl-report` command.

Nothing here imports torch or lightning itself; note that importing any `mrl.*` module still
runs `mrl/__init__.py`.
"""
