"""Training input throughput (images/s) of the ImageFolder paths: PIL decoding + torchvision
transforms in the loader workers (`data.decode=cpu`) against batched decoding + tensor
augmentation after the loader (`data.decode=device`, `mrl.data.jpeg`).

Writes --images synthetic ImageNet-like JPEGs (colour fields plus noise, sides drawn around
400 x 350, quality 90, about 90 KiB a file against ImageNet's ~110 KB; 8 class folders) into a
temporary directory, then times the training transform (RandomResizedCrop to --resolution +
flip + normalisation, batches of --batch-size) of:

- `pil` on the CPU: `ImageFolderDataModule(decode="cpu").train_dataloader()`;
- `decode_device` on the CPU: the loader of encoded bytes (`EncodedImageFolder` +
  `collate_encoded`), each batch then decoded by `ImageFolderDataModule.decode_batch`, which is
  what its `on_before_batch_transfer` hook does under a Trainer (libjpeg-turbo, main process);
- `decode_device` on CUDA, the same with nvjpeg, when `torch.cuda.is_available()`;

each with 0 and 2 loader workers. A pass iterates one epoch; its first --warmup batches
(worker start-up, first allocations) are not timed; a row is the best of --passes passes.
Writes `--out` (path,device,num_workers,batch_size,resolution,images_per_s; default
`$MRL_OUTPUT_ROOT/bench/loader_throughput.csv`, `$MRL_OUTPUT_ROOT` defaulting to `outputs`).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench/loader_throughput.py [--images 512] \
        [--out experiments/results/bench/loader_throughput.csv]
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mrl.data import ImageFolderDataModule
from mrl.data.jpeg import EncodedImageFolder, collate_encoded
from mrl.report.paths import output_root
from mrl.runs.files import write_csv

FIELDS = ["path", "device", "num_workers", "batch_size", "resolution", "images_per_s"]


def write_jpegs(root: Path, count: int, classes: int = 8, seed: int = 0) -> None:
    """`count` photo-like JPEGs spread over `root/train/class<k>/`, plus a minimal val/."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        height, width = int(rng.integers(280, 421)), int(rng.integers(330, 471))
        coarse = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), int)
        pixels = np.clip(smooth + rng.integers(-24, 25, smooth.shape), 0, 255).astype(np.uint8)
        folder = root / "train" / f"class{i % classes}"
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    # The data module checks that val/ has the same class folders; one image each suffices.
    for c in range(classes):
        Image.new("RGB", (64, 64)).save(root / "val" / f"class{c}" / "0.jpg")


def timed_pass(batches: Iterable, process: Callable, warmup: int, sync: Callable) -> float:
    """Images per second over one pass, after its first `warmup` batches."""
    images, start = 0, None
    for index, batch in enumerate(batches):
        x = process(batch)
        if index + 1 == warmup:
            sync()
            start = time.perf_counter()
        elif index + 1 > warmup:
            images += x.shape[0]
    sync()
    if start is None or images == 0:
        raise SystemExit("loader_throughput: too few batches after the warm-up: raise --images")
    return images / (time.perf_counter() - start)


def measure(root: Path, path: str, device: str, workers: int, args: argparse.Namespace) -> float:
    """Best images/s of `args.passes` passes of one (path, device, workers) configuration."""
    decode = "cpu" if path == "pil" else "device"
    dm = ImageFolderDataModule(
        root=str(root), num_classes=8, batch_size=args.batch_size, num_workers=workers,
        image_size=args.resolution, decode=decode, pin_memory=device == "cuda",
    )  # fmt: skip
    if path == "pil":
        loader = dm.train_dataloader()

        def process(batch):
            return batch[0]
    else:
        loader = DataLoader(
            EncodedImageFolder(dm.train_dir), batch_size=args.batch_size, shuffle=True,
            drop_last=True, collate_fn=collate_encoded, num_workers=workers,
            persistent_workers=workers > 0, pin_memory=device == "cuda",
        )  # fmt: skip

        def process(batch):
            return dm.decode_batch(batch, device, train=True)[0]

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = max(timed_pass(loader, process, args.warmup, sync) for _ in range(args.passes))
    del loader  # ends persistent workers before the next configuration starts its own
    return best


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="synthetic training JPEGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=176, help="training crop side")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per pass")
    parser.add_argument("--passes", type=int, default=2, help="passes per row (best kept)")
    parser.add_argument(
        "--out",
        default=str(output_root() / "bench" / "loader_throughput.csv"),
        help="the table (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    configs = [("pil", "cpu"), ("decode_device", "cpu")]
    if torch.cuda.is_available():
        configs.append(("decode_device", "cuda"))
    else:
        print("CUDA not available: decode_device on cuda skipped")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"{args.images} images, batch {args.batch_size}, {args.resolution} px"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="loader_throughput_") as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images)
        sizes = [p.stat().st_size for p in (root / "train").rglob("*.jpg")]
        print(f"mean JPEG size {sum(sizes) / len(sizes) / 1024:.0f} KiB")
        for path, device in configs:
            for workers in args.workers:
                rate = measure(root, path, device, workers, args)
                row = [path, device, workers, args.batch_size, args.resolution, f"{rate:.1f}"]
                rows.append(dict(zip(FIELDS, row)))
                print(f"{path:>14} {device:>5} workers={workers}: {rate:8.1f} images/s")

    write_csv(args.out, rows, FIELDS)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
