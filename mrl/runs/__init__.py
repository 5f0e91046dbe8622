"""The run-folder format: the file names, columns and method names of what a run writes, the
atomic writers, the provenance of a run, and the one reader of run folders that `mrl-aggregate`
and `mrl-report` stand on."""
