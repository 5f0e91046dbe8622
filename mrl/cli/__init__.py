"""The command-line programs, one module each: `mrl-train` (`train`), `mrl-train-text`
(`train_text`), `mrl-eval` (`evaluate`), `mrl-aggregate` (`aggregate`), `mrl-report` (`report`)
and `mrl-submit` (`submit`). Nothing in the package imports them."""
