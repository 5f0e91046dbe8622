"""The command-line programs, one module each: `mrl-train` (`train`), `mrl-train-text`
(`train_text`), `mrl-eval` (`evaluate`), `mrl-aggregate` (`aggregate`), `mrl-report` (`report`),
`mrl-export` (`export`) and `mrl-submit` (`submit`). Nothing in the package imports them.

Started as a console command, this package checks the command's extras before any of its
modules imports them, so a missing extra is one line naming what to install (exit status 2)
instead of an ImportError's traceback.
"""

import sys
from pathlib import Path

from mrl.extras import COMMANDS, require

# The console script's name: every command module imports this package first.
_COMMAND = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
if _COMMAND in COMMANDS:
    require(_COMMAND)
