"""The Lightning modules' common base, `MatryoshkaModule` (one training step over a Matryoshka
loss, the optimizer and schedule set-up), and the classification module, `MRLClassifier`:
encoder + nested heads + Matryoshka loss."""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from mrl.core.errors import ConfigError, NonFiniteError
from mrl.core.heads import MRLHead
from mrl.core.losses import MatryoshkaLoss, NestedLoss

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def check_finite(total: Tensor, step: int, batch_idx: int) -> None:
    """Raise `NonFiniteError` naming the step when the training loss is not finite."""
    if not torch.isfinite(total):
        raise NonFiniteError(
            f"non-finite training loss {total.item()} at step {step} (batch {batch_idx}): lower "
            f"the learning rate or check the data"
        )


def load_encoder_weights(encoder: nn.Module, ckpt_path: str | Path) -> None:
    """Copy the encoder weights of an `mrl-train` checkpoint into `encoder` (strictly)."""
    from mrl.runs.checkpoints import load_checkpoint

    state = load_checkpoint(ckpt_path, where="model.encoder_init")["state_dict"]
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(
            f"model.encoder_init={ckpt_path} does not fit the encoder: {first}"
        ) from err


class MatryoshkaModule(pl.LightningModule):
    """What every trainer's module shares: one training step over a `NestedLoss` (its per-dim
    losses, their weighted total, a stop at a non-finite total, the logging of both) and the
    optimizer set-up (weight decay on weights only, when `no_weight_decay_on_norm_and_bias` is
    among the subclass's hyper-parameters; a schedule that gets the run's length in steps).

    A subclass says what the loss is fed, `loss_inputs(batch) -> (inputs, batch_size)`, and
    which dims its per-dim losses are, `loss_dims`.
    """

    def __init__(
        self, loss: NestedLoss, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None
    ) -> None:
        super().__init__()
        self.loss = loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    @property
    def loss_dims(self) -> tuple[int, ...]:
        """The nesting dims of the per-dim losses, in order (`train/loss@{m}`)."""
        raise NotImplementedError

    def loss_inputs(self, batch: Any) -> tuple[tuple[Tensor, ...], int | None]:
        """The loss's inputs for a training batch, and the batch size to log with."""
        raise NotImplementedError

    def auxiliary_loss(self, batch: Any, inputs: tuple[Tensor, ...]) -> Tensor | None:
        """A term added to the Matryoshka loss (e.g. distillation from a frozen model), logged
        as `train/auxiliary`; None (the default) adds nothing."""
        return None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, batch_size = self.loss_inputs(batch)
        per_dim = self.loss.per_dim(*inputs)
        total = self.loss.weighted(per_dim)
        extra = self.auxiliary_loss(batch, inputs)
        if extra is not None:
            self.log("train/auxiliary", extra.detach(), batch_size=batch_size)
            total = total + extra
        check_finite(total, self.global_step, batch_idx)
        self.log("train/loss", total, batch_size=batch_size)
        # The bar's loss: the per-dim mean, comparable across nesting lists (the total is not).
        self.log("train/loss_mean", per_dim.detach().mean(), prog_bar=True, logger=False,
                 batch_size=batch_size)  # fmt: skip
        # K `self.log` calls per step cost several percent of a small model's step, and the
        # loggers only keep step values every `log_every_n_steps`, so log them only then.
        if self._logs_kept_now():
            self.log_dict(
                {f"train/loss@{m}": v for m, v in zip(self.loss_dims, per_dim.detach())},
                batch_size=batch_size,
            )
        return total

    def _logs_kept_now(self) -> bool:
        """Whether the loggers keep this step's values (always, without a Trainer)."""
        trainer = self._trainer
        if trainer is None:
            return True
        every = max(int(trainer.log_every_n_steps), 1)
        return (trainer.global_step + 1) % every == 0 or trainer.should_stop

    def parameter_groups(self) -> list[dict]:
        """Weights with decay; norm parameters and biases without when so configured."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not self.hparams.get("no_weight_decay_on_norm_and_bias", False):
            return [{"params": params}]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 1
        )
        available = {"total_steps": total, "steps_per_epoch": total / epochs}
        accepted = inspect.signature(self.scheduler_factory).parameters
        scheduler = self.scheduler_factory(
            optimizer, **{k: v for k, v in available.items() if k in accepted}
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class MRLClassifier(MatryoshkaModule):
    """Trains `head(encoder(x))` with `loss`, logging the loss and accuracy of every nesting dim.

    Logged names: `train/loss` (weighted total), `train/loss@{m}`, and for stage in (val, test)
    `{stage}/top1@{m}`, `{stage}/top5@{m}` (when there are at least 5 classes) and `{stage}/top1`
    (the largest dim, for checkpoint monitoring). Accuracies are torchmetrics objects, one per dim
    and stage, so they are reduced over all processes under DDP.

    The `model:` config's switches are its arguments: `freeze_encoder` (no gradients, BatchNorm
    in eval mode), `encoder_init` (start the encoder from an `mrl-train` checkpoint's),
    `compile`/`compile_mode` (torch.compile the encoder in place) and `channels_last`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: MRLHead,
        loss: MatryoshkaLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        no_weight_decay_on_norm_and_bias: bool = True,
        channels_last: bool = False,
        freeze_encoder: bool = False,
        encoder_init: str | None = None,
        compile: bool = False,
        compile_mode: str = "default",
        config: dict | None = None,
    ) -> None:
        super().__init__(loss, optimizer, scheduler)
        self.save_hyperparameters(ignore=["encoder", "head", "loss", "optimizer", "scheduler"])
        self.encoder, self.head = encoder, head
        self.nesting = head.nesting
        loss.check_num_dims(self.nesting, "head.nesting")  # once, here: not on every step
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()  # Lightning keeps the modes it finds; `train` below keeps this
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            for m in self.nesting:
                for k in self.top_ks:
                    self.metrics[self._key(stage, k, m)] = MulticlassAccuracy(
                        head.num_classes, top_k=k, average="micro"
                    )
        if encoder_init:
            load_encoder_weights(self.encoder, encoder_init)
        if compile:
            # Compiled in place: the state-dict keys stay those of the plain encoder.
            self.encoder.compile(mode=compile_mode)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def top_ks(self) -> tuple[int, ...]:
        return (1, 5) if self.head.num_classes >= 5 else (1,)

    @staticmethod
    def _key(stage: str, k: int, m: int) -> str:
        return f"{stage}_top{k}_{m}"

    def forward(self, x: Tensor) -> Tensor:
        """The representation `z` `(B, D)`; every prefix `z[:, :m]` is an embedding."""
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def train(self, mode: bool = True) -> "MRLClassifier":
        """As `nn.Module.train`, but a frozen encoder stays in eval mode (BatchNorm included)."""
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.encoder.eval()
        return self

    @property
    def loss_dims(self) -> tuple[int, ...]:
        return tuple(self.nesting)

    def loss_inputs(self, batch: tuple[Tensor, Tensor]) -> tuple[tuple[Tensor, ...], None]:
        x, y = batch
        return (self.head(self(x)), y), None

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        logits = self.head(self(x))
        self.log(f"{stage}/loss", self.loss(logits, y), sync_dist=True)
        for logits_m, m in zip(logits, self.nesting):
            for k in self.top_ks:
                metric = self.metrics[self._key(stage, k, m)]
                metric.update(logits_m, y)
                # The bar shows top-1 at the smallest and the largest dim.
                shown = k == 1 and m in (self.nesting[0], self.nesting[-1])
                self.log(f"{stage}/top{k}@{m}", metric, prog_bar=shown)
        largest = self.metrics[self._key(stage, 1, self.nesting[-1])]
        self.log(f"{stage}/top1", largest)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)
