"""Per-step training time of MRL against a single head and against MRL-E, on one encoder.

Two measurements, both on the encoder, nesting and loss of the composed config:

1. bare PyTorch: full training steps (forward, Matryoshka loss, backward, optimizer step) of the
   three models, interleaved round by round so that machine noise hits all of them alike;
   median step times and the median of the per-round ratios;
2. through Lightning: short `Trainer.fit` runs of the real `MRLClassifier` (per-dim loss logging
   included), alternating between the models; median time per training batch.

Inputs are random tensors of the data config's shape: step time does not depend on pixel values.
Writes `--out` (quantity,value; default `$MRL_OUTPUT_ROOT/bench/step_time.csv`,
`$MRL_OUTPUT_ROOT` defaulting to `outputs`).

    .venv/bin/python experiments/bench/step_time.py [--rounds 40] \
        [--out experiments/results/bench/step_time.csv] [overrides...]

Extra arguments are Hydra overrides of conf/train.yaml, e.g. `encoder=resnet18 nesting=[8,512]`.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

import mrl.training.resolvers  # noqa: F401
from mrl.conf import CONFIG_DIR
from mrl.report.paths import output_root
from mrl.runs.files import atomic_write_text
from mrl.training.builders import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import batch_timer  # noqa: E402  (the experiment scripts' shared helpers)

VARIANTS = {"single": ["method=ff"], "mrl": ["method=mrl"], "mrl_e": ["method=mrl_e"]}


def compose_variant(overrides: list[str], name: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.run_dir=unused", *overrides, *VARIANTS[name]])


def bare_step(model, optimizer, x, y) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(model.head(model.encoder(x)), y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def ratio_of_medians(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(times[a]) / statistics.median(times[b])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved bare-step rounds")
    parser.add_argument("--fit-steps", type=int, default=40, help="steps per Trainer.fit run")
    parser.add_argument("--fit-repeats", type=int, default=3, help="fit runs per model")
    parser.add_argument(
        "--out",
        default=str(output_root() / "bench" / "step_time.csv"),
        help="the table (default: %(default)s)",
    )
    args, overrides = parser.parse_known_args(argv)

    cfgs = {name: compose_variant(overrides, name) for name in VARIANTS}
    datamodule = instantiate(cfgs["mrl"].data)
    shape = (datamodule.in_channels, datamodule.image_size, datamodule.image_size)
    batch = int(cfgs["mrl"].data.batch_size)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, datamodule.num_classes, (batch,))

    def fresh(name: str):
        torch.manual_seed(0)
        return build_model(cfgs[name], datamodule.num_classes, datamodule.in_channels)

    names = list(VARIANTS)
    models = {n: fresh(n) for n in names}
    optims = {n: torch.optim.SGD(models[n].parameters(), lr=1e-3, momentum=0.9) for n in names}
    bare: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds + 5):
        for name in names[r % 3 :] + names[: r % 3]:  # rotate who goes first
            t = bare_step(models[name], optims[name], x, y)
            if r >= 5:  # warm-up rounds
                bare[name].append(t)

    loader = DataLoader(TensorDataset(x.repeat(4, 1, 1, 1), y.repeat(4)), batch_size=batch)
    fit: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.fit_repeats):
        for name in names:
            timer = batch_timer()
            trainer = pl.Trainer(
                max_steps=args.fit_steps, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                limit_val_batches=0,
            )  # fmt: skip
            trainer.fit(fresh(name), train_dataloaders=loader)
            fit[name] += timer.times[3:]  # the first batches include start-up work

    rows = {
        "bare_ratio_mrl_over_single": statistics.median(
            a / b for a, b in zip(bare["mrl"], bare["single"], strict=True)
        ),
        "bare_ratio_mrl_e_over_mrl": statistics.median(
            a / b for a, b in zip(bare["mrl_e"], bare["mrl"], strict=True)
        ),
        "fit_ratio_mrl_over_single": ratio_of_medians(fit, "mrl", "single"),
        "fit_ratio_mrl_e_over_mrl": ratio_of_medians(fit, "mrl_e", "mrl"),
    }
    for n in names:
        rows[f"bare_median_step_ms_{n}"] = 1000 * statistics.median(bare[n])
        rows[f"fit_median_step_ms_{n}"] = 1000 * statistics.median(fit[n])
    cfg = cfgs["mrl"]
    print(
        f"encoder={cfg.encoder._target_} nesting={list(cfg.nesting)} batch={batch} "
        f"threads={torch.get_num_threads()} rounds={args.rounds} "
        f"fit={args.fit_repeats}x{args.fit_steps} steps"
    )
    for key, value in rows.items():
        print(f"  {key:<32} {value:9.3f}")
    text = "quantity,value\n" + "".join(f"{k},{v:.4f}\n" for k, v in rows.items())
    text += f"batch,{batch}\nthreads,{torch.get_num_threads()}\n"
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
