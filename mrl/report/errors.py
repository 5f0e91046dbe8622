"""The one error of `mrl-report` and `mrl-aggregate`: input they cannot use."""

from mrl.core.errors import ConfigError


class InputError(ConfigError):
    """Unusable input (a missing folder, nothing recognisable, a malformed option): the commands
    report it as one line `<command>: error: <message>` and exit status 2 (`run_command`)."""
