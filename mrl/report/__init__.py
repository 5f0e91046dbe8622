"""The library of `mrl-aggregate` and `mrl-report`: tables, figures and claims from the tidy
tables that `mrl-train` and `mrl-eval` write.

- `aggregate`, `aggregate_tables`: `mrl-aggregate`'s tidy CSV and per-study tables of methods x
  dims; `study_table`: one study's settings side by side with paired differences (`--by`);
- `load`: find and read the tables under a results folder into normalised DataFrames, and the
  paper's reference numbers;
- `plots`: one function per figure (DataFrames in, a `Drawn` figure with its table and the notes
  of what it could not draw out), one module per figure family on one shared set-up (`style`);
- `figure`: the `Drawn` record and its HTML; `html`: the self-contained page of every figure;
- `claims`: the paper's claims measured on studies, with paired intervals and a verdict;
- `write`: what `mrl-report` writes; `paths`: where both commands write by default;
  `errors`: their one error, input they cannot use.

Nothing here imports torch or lightning itself; note that importing any `mrl.*` module still
runs `mrl/__init__.py`.
"""
