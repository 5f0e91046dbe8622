"""Checkpoint writing that never leaves a half-written file under a checkpoint's name."""

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own directory, then renames it.

    A rename within one directory is atomic on POSIX file systems, so a job killed mid-save
    (preemption, time limit) leaves the previous checkpoint intact. Lightning's default writes
    through the system temp dir, which is often another file system than a cluster's run
    directory, where the final move becomes a non-atomic copy. Remote (`scheme://`) paths go to
    Lightning's own writer. A model with NaN or infinite tensors is refused
    (`NonFiniteError`) and nothing is written.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        from mrl.runs.checkpoints import check_finite_state

        # A non-finite model is never written: a rerun must find only weights it can use.
        step = checkpoint.get("global_step")
        check_finite_state(checkpoint.get("state_dict", {}), f"the model at step {step}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from err
        except RuntimeError as err:
            # torch's zip writer reports a full disk as "unexpected pos ..." without the cause.
            if shutil.disk_usage(path.parent).free < 4 * 2**20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)
