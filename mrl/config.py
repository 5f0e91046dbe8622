"""OmegaConf resolvers used by the configs in `conf/`; importing this module registers them."""

import secrets
import time

from omegaconf import OmegaConf


def _run_name(run_id: str | int | None) -> str:
    """`run_id` when given (stable across requeues), else a timestamp with a random suffix."""
    if run_id not in (None, ""):
        return str(run_id)
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(2)}"


def register_resolvers() -> None:
    """Register `mrl.max` (largest entry of a list) and `mrl.run_name` once per process."""
    if not OmegaConf.has_resolver("mrl.max"):
        OmegaConf.register_new_resolver("mrl.max", lambda xs: max(xs))
    if not OmegaConf.has_resolver("mrl.run_name"):
        # Cached so that one config object always names the same run directory.
        OmegaConf.register_new_resolver("mrl.run_name", _run_name, use_cache=True)


register_resolvers()
