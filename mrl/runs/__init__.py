"""The run folder: the file names, columns and method names of what a run writes, its
checkpoints (reading one safely, checking it), the run directory's checks and lock, the atomic
writers, the provenance of a run, and the one reader of run folders that `mrl-aggregate` and
`mrl-report` stand on. Every command can use it without importing training."""
