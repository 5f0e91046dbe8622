"""Lightning callbacks of the training recipes: `ProgressiveResolution` (FFCV's low-to-high
training-resolution schedule) and its pure schedule function `resolution_at`, and
`HideVersionInProgressBar`."""

from fractions import Fraction
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from mrl.core.errors import ConfigError
from mrl.core.validate import non_negative_int, positive_int


def _check_schedule(
    start_res: int, end_res: int, start_epoch: int, end_epoch: int, step: int
) -> None:
    for name, value in (("start_res", start_res), ("end_res", end_res), ("step", step)):
        positive_int(value, f"ProgressiveResolution: {name}")
    for name, value in (("start_epoch", start_epoch), ("end_epoch", end_epoch)):
        non_negative_int(value, f"ProgressiveResolution: {name}")
    if end_epoch < start_epoch:
        raise ConfigError(
            f"ProgressiveResolution: end_epoch={end_epoch} is before start_epoch={start_epoch}"
        )
    if step > min(start_res, end_res):
        # Rounding to a multiple of a step larger than the resolution could give 0 px.
        raise ConfigError(
            f"ProgressiveResolution: step={step} must not exceed start_res={start_res} "
            f"or end_res={end_res}"
        )


def resolution_at(
    epoch: int, start_res: int, end_res: int, start_epoch: int, end_epoch: int, step: int = 32
) -> int:
    """The training resolution of `epoch` (0-based) under FFCV's progressive-resizing schedule.

    `start_res` up to `start_epoch`, `end_res` from `end_epoch` on, and in between the linear
    interpolation rounded to the NEAREST multiple of `step` (half to even), exactly as
    `get_resolution` in FFCV's ImageNet example and the MRL release's `train_imagenet.py`
    (`int(np.round(interp / 32)) * 32`). For 160 -> 192 over epochs 29-34 that is 160 up to
    epoch 31 and 192 from epoch 32 on.
    """
    _check_schedule(start_res, end_res, start_epoch, end_epoch, step)
    if epoch <= start_epoch:
        return start_res
    if epoch >= end_epoch:
        return end_res
    # Exact arithmetic: float interpolation could land a hair off a .5 rounding boundary.
    interp = start_res + Fraction(end_res - start_res) * (epoch - start_epoch) / (
        end_epoch - start_epoch
    )
    return round(interp / step) * step


class ProgressiveResolution(Callback):
    """Trains at a low resolution first, then ramps it up (FFCV's progressive resizing).

    Each epoch's training crops are `resolution_at(epoch, ...)` px square; evaluation is
    untouched. The data module must expose a settable `train_resolution` and a
    `train_resolution_schedule` hook (`mrl.data.ImageFolderDataModule` does).

    Design: the loader is NOT rebuilt (no `reload_dataloaders_every_n_epochs` needed). The
    data module's train transform reads the crop side from a one-element tensor in shared
    memory, so a new value reaches every DataLoader worker's copy of the dataset, persistent
    workers included, without respawning them. Workers read it per image, but start loading
    (prefetching) as soon as an epoch's iterator exists, so the side must be set before then:

    - epochs after the first of a `fit` call: Lightning creates the iterator after
      `on_train_epoch_start`, where this callback sets the epoch's side;
    - the first epoch of a fresh `fit`: the iterator comes right after `train_dataloader()`,
      before any epoch hook (with a scheduler, while `configure_optimizers` asks for
      `estimated_stepping_batches`), so this callback installs its schedule as the data
      module's `train_resolution_schedule`, which `train_dataloader()` applies to
      `trainer.current_epoch`. This also keeps `reload_dataloaders_every_n_epochs` correct.

    Setting a plain attribute in `on_train_epoch_start` would not be enough: with
    `num_workers > 0` the workers hold copies made when the iterator was created (for the
    whole run with persistent workers), and reloading the loader every epoch would not fix
    it either, since Lightning reloads (and starts the workers) before that hook runs.

    Known limit, on resuming from a checkpoint: Lightning builds the first train iterator
    before it restores the epoch counter, so the batches prefetched then (up to
    `num_workers x prefetch_factor`, plus one) use the side of the epoch counter at that
    time; the rest of the resumed epoch follows the schedule. Only a resume into the ramp or
    after it is affected, and only for those few batches.

    The side of each epoch is also logged as `train/resolution`.
    """

    def __init__(
        self, start_res: int, end_res: int, start_epoch: int, end_epoch: int, step: int = 32
    ) -> None:
        _check_schedule(start_res, end_res, start_epoch, end_epoch, step)
        self.start_res, self.end_res = start_res, end_res
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.step = step

    def resolution(self, epoch: int) -> int:
        """The training resolution of `epoch` under this callback's schedule."""
        return resolution_at(
            epoch, self.start_res, self.end_res, self.start_epoch, self.end_epoch, self.step
        )

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> pl.LightningDataModule:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not (
            hasattr(datamodule, "train_resolution")
            and hasattr(datamodule, "train_resolution_schedule")
        ):
            name = type(datamodule).__name__ if datamodule is not None else "no data module"
            raise ConfigError(
                f"callbacks.progressive_resolution needs a data module whose training "
                f"resolution can change between epochs (e.g. data=imagenet), got {name}: "
                f"choose such data or remove the callback (callbacks.progressive_resolution=null)"
            )
        return datamodule

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the data module and install the schedule it applies in `train_dataloader()`."""
        if stage == "fit":
            self._datamodule(trainer).train_resolution_schedule = self.resolution

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set this epoch's training resolution (before its batches are loaded) and log it."""
        side = self.resolution(trainer.current_epoch)
        self._datamodule(trainer).train_resolution = side
        pl_module.log("train/resolution", float(side), on_step=False, on_epoch=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Uninstall the schedule, so a later `fit` without this callback is unaffected."""
        datamodule = getattr(trainer, "datamodule", None)
        if stage == "fit" and getattr(datamodule, "train_resolution_schedule", None) is not None:
            datamodule.train_resolution_schedule = None


class HideVersionInProgressBar(Callback):
    """Leaves the loggers' version number (`v_num`, here a wandb run id) out of the progress
    bar, whichever bar the Trainer shows; nothing when it shows none.

    A callback that adjusts the Trainer's own bar rather than a bar in the callbacks list:
    Lightning refuses a bar callback together with `trainer.enable_progress_bar=false`.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Wrap the bar's `get_metrics` to drop `v_num` (once)."""
        bar = trainer.progress_bar_callback
        if bar is None or getattr(bar.get_metrics, "hides_version", False):
            return
        shown = bar.get_metrics

        def get_metrics(*args: Any, **kwargs: Any) -> dict[str, Any]:
            metrics = dict(shown(*args, **kwargs))
            metrics.pop("v_num", None)
            return metrics

        get_metrics.hides_version = True  # type: ignore[attr-defined]
        bar.get_metrics = get_metrics
