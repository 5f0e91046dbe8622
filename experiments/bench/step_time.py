"""Per-step training time of MRL against a single head and against MRL-E, on one encoder.

Builds the encoder, heads and loss from the real configs (`conf/`), then times full training
steps (forward, Matryoshka loss, backward, optimizer step) of the three models, interleaved
round by round so that machine noise hits all of them alike. Reports median step times and the
median of the per-round ratios, and writes them to experiments/results/bench/step_time.csv.

    .venv/bin/python experiments/bench/step_time.py [--rounds 40] [--batch 256] [overrides...]

Extra arguments are Hydra overrides of conf/train.yaml, e.g. `encoder=resnet18 nesting=[8,512]`.
Inputs are random tensors of the data config's shape: step time does not depend on pixel values.
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import mrl.config  # noqa: F401
from mrl.results import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def build(overrides: list[str]):
    """The encoder factory, head factories and loss of the composed config."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.run_dir=unused", *overrides])
    datamodule = instantiate(cfg.data)
    encoder = instantiate(cfg.encoder)(in_channels=datamodule.in_channels)
    nesting = list(cfg.nesting)
    heads = {
        "single": dict(nesting=[nesting[-1]], tied=False),
        "mrl": dict(nesting=nesting, tied=False),
        "mrl_e": dict(nesting=nesting, tied=True),
    }
    make_head = instantiate(cfg.head)
    shape = (datamodule.in_channels, datamodule.image_size, datamodule.image_size)
    models = {}
    for name, kw in heads.items():
        head = make_head(in_features=encoder.num_features, num_classes=datamodule.num_classes, **kw)
        model = torch.nn.ModuleDict({"encoder": copy.deepcopy(encoder), "head": head})
        models[name] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    return models, instantiate(cfg.loss), shape, datamodule.num_classes, cfg


def step(model, optimizer, loss_fn, x, y) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model["head"](model["encoder"](x)), y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "experiments/results/bench/step_time.csv"))
    args, overrides = parser.parse_known_args(argv)
    torch.manual_seed(0)
    models, loss_fn, shape, num_classes, cfg = build(overrides)
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, num_classes, (args.batch,))
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.warmup):
        for name in names:
            step(*models[name], loss_fn, x, y)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(step(*models[name], loss_fn, x, y))
    median = {n: statistics.median(t) for n, t in times.items()}
    ratio = {
        "mrl/single": statistics.median(a / b for a, b in zip(times["mrl"], times["single"])),
        "mrl_e/mrl": statistics.median(a / b for a, b in zip(times["mrl_e"], times["mrl"])),
    }
    encoder = cfg.encoder._target_.rsplit(".", 1)[-1]
    print(
        f"encoder={encoder} nesting={list(cfg.nesting)} batch={args.batch} "
        f"rounds={args.rounds} threads={torch.get_num_threads()}"
    )
    for n in names:
        print(f"  {n:>7}: median step {1000 * median[n]:8.2f} ms")
    for k, v in ratio.items():
        print(f"  {k:>10}: median ratio of interleaved steps {v:.3f}")
    rows = ["quantity,value"]
    rows += [f"median_step_ms_{n},{1000 * median[n]:.3f}" for n in names]
    rows += [f"ratio_{k.replace('/', '_over_')},{v:.4f}" for k, v in ratio.items()]
    rows += [f"batch,{args.batch}", f"rounds,{args.rounds}", f"threads,{torch.get_num_threads()}"]
    atomic_write_text(args.out, "\n".join(rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
