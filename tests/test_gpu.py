"""The GPU-only paths, on the device `MRL_CHECK_DEVICE` names (default `cuda`).

Every test here is marked `gpu` and skips without CUDA. `experiments/bench/gpu_check.py` runs
them on the GPU; its `--dry-run` runs the same tests with `MRL_CHECK_DEVICE=cpu`, so that they
stay runnable between GPU loans (there they compare the CPU against itself, and the GPU-only
settings fall back to their CPU forms: `16-mixed` to `bf16-mixed`, nvjpeg to libjpeg-turbo).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, PAPER_CPU_TINY, compose_eval, compose_train
from PIL import Image

from mrl import MatryoshkaContrastiveLoss, MatryoshkaLoss, MRLHead
from mrl.cli.evaluate import evaluate
from mrl.cli.train import train
from mrl.core.matryoshka_2d import Matryoshka2DLoss
from mrl.data.jpeg import decode_images, is_jpeg
from mrl.eval.search import Searcher

DEVICE = os.environ.get("MRL_CHECK_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        ON_GPU and not torch.cuda.is_available(),
        reason="needs a CUDA GPU (experiments/bench/gpu_check.py --dry-run runs these on the CPU)",
    ),
]

# bf16 keeps 8 bits of mantissa: about 2-3 significant digits after a few additions.
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}


def _trainer_overrides(precision: str) -> list[str]:
    """`trainer=gpu` with `precision` on the GPU; the CPU with the nearest precision otherwise."""
    if ON_GPU:
        return ["trainer=gpu", f"trainer.precision={precision}"]
    # CPU autocast has no float16 matrix kernels worth timing; bf16 runs the same code path.
    cpu_precision = "bf16-mixed" if precision == "16-mixed" else precision
    return ["trainer.accelerator=cpu", f"trainer.precision={cpu_precision}"]


def _head_and_loss_grads(device: str, dtype: torch.dtype, tied: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    nesting = [4, 8, 16, 32]
    head = MRLHead(32, 10, nesting, tied=tied)
    loss = MatryoshkaLoss(weights=[1.0, 2.0, 0.5, 1.0], label_smoothing=0.1)
    z = torch.randn(16, 32)
    y = torch.randint(0, 10, (16,))
    head, loss = head.to(device, dtype), loss.to(device)
    z = z.to(device, dtype).requires_grad_()
    value = loss(head(z), y.to(device))
    value.backward()
    grads = {"loss": value.detach(), "z": z.grad}
    grads.update({name: p.grad for name, p in head.named_parameters()})
    return {name: t.float().cpu() for name, t in grads.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("tied", [False, True], ids=["mrl", "mrl_e"])
def test_heads_and_loss_on_the_device_match_the_cpu(dtype: torch.dtype, tied: bool):
    reference = _head_and_loss_grads("cpu", torch.float32, tied)
    on_device = _head_and_loss_grads(DEVICE, dtype, tied)
    assert reference.keys() == on_device.keys()
    for name, expected in reference.items():
        torch.testing.assert_close(on_device[name], expected, **TOLERANCE[dtype], msg=name)


def test_loss_buffers_follow_the_module_to_the_device():
    nesting = [4, 8, 16]
    losses = [
        MatryoshkaLoss(weights=[1.0, 2.0, 3.0]),
        MatryoshkaContrastiveLoss(nesting, weights=[1.0, 2.0, 3.0], gather=False),
        Matryoshka2DLoss(nesting, num_layers=3, gather=False),
    ]
    for loss in losses:
        loss.to(DEVICE)
        for name, buffer in loss.named_buffers():
            assert buffer.device.type == torch.device(DEVICE).type, (type(loss).__name__, name)


def test_contrastive_loss_on_the_device_matches_the_cpu():
    nesting = [8, 16, 32]
    g = torch.Generator().manual_seed(0)
    anchor, positive = torch.randn(2, 24, 32, generator=g)

    def run(device: str) -> tuple[torch.Tensor, ...]:
        a = anchor.to(device).requires_grad_()
        p = positive.to(device).requires_grad_()
        loss = MatryoshkaContrastiveLoss(nesting, symmetric=True, gather=False)
        value = loss.to(device)(a, p)
        value.backward()
        return value.detach().cpu(), a.grad.cpu(), p.grad.cpu()

    for got, expected in zip(run(DEVICE), run("cpu"), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _fit(run_dir: Path, *overrides: str) -> dict:
    train(compose_train(run_dir, *overrides, "trainer.fast_dev_run=true"))
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize(
    "precision,extra",
    [
        ("bf16-mixed", []),
        ("16-mixed", []),
        ("bf16-mixed", ["model.channels_last=true"]),
        ("bf16-mixed", ["model.compile=true"]),
    ],
    ids=["bf16", "fp16", "bf16-channels_last", "bf16-compile"],
)
def test_fast_dev_run_of_the_default_job(tmp_path: Path, precision: str, extra: list[str]):
    written = _fit(tmp_path, *FAST, *_trainer_overrides(precision), *extra)
    assert [row["dim"] for row in written["per_dim"]] == [2, 4, 8, 16, 32]
    assert all(0.0 <= row["top1"] <= 1.0 for row in written["per_dim"])


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 smooth 48x48 JPEGs (quality 90) in train/ and val/."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize((48, 48), Image.BICUBIC)
                image.save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_fast_dev_run_of_a_paper_recipe(tmp_path: Path, jpeg_root: Path, decode: str):
    tiny = [o for o in PAPER_CPU_TINY if not o.startswith("trainer.")]
    written = _fit(
        tmp_path, "experiment=paper/resnet50_imagenet", f"data.root={jpeg_root}",
        f"data.decode={decode}", *tiny, *_trainer_overrides("bf16-mixed"),
        "trainer.devices=1", "trainer.strategy=auto", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    )  # fmt: skip
    assert len(written["per_dim"]) == 9
    assert all(row["top1"] is not None for row in written["per_dim"])


def test_device_jpeg_decoding_matches_pil(jpeg_root: Path):
    paths = sorted((jpeg_root / "train").glob("*/*.jpg"))
    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    assert all(is_jpeg(data) for data in encoded)
    decoded = decode_images(encoded, device=DEVICE)
    for path, image in zip(paths, decoded, strict=True):
        assert image.device.type == torch.device(DEVICE).type
        expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        difference = np.abs(image.cpu().numpy().astype(int) - expected.astype(int))
        # Decoders may round the inverse DCT and the chroma upsampling differently.
        assert difference.mean() < 1.5 and difference.max() <= 16, path


@pytest.mark.parametrize("backend", ["exact", "ivf"])
def test_faiss_on_the_gpu_matches_faiss_on_the_cpu(backend: str):
    faiss = pytest.importorskip("faiss")
    if ON_GPU and (not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0):
        pytest.skip("this FAISS build has no GPU support (faiss-gpu or a CUDA build needed)")
    rng = np.random.default_rng(0)
    database = rng.standard_normal((4096, 64)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = database[:64] + 0.1 * rng.standard_normal((64, 64)).astype(np.float32)
    options = dict(nlist=16, nprobe=16) if backend == "ivf" else {}
    cpu = Searcher(database, backend, use_gpu=False, **options)
    device = Searcher(database, backend, use_gpu=ON_GPU, **options)
    assert device.on_gpu is ON_GPU
    cpu_scores, cpu_ids = cpu.search(queries, 10)
    gpu_scores, gpu_ids = device.search(queries, 10)
    np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=1e-4, atol=1e-4)
    # Where two scores tie to float precision the order may differ; elsewhere it is the same.
    assert (gpu_ids == cpu_ids).mean() > 0.99


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_train(run_dir, *FAST, "trainer.max_epochs=1", "callbacks.lr_monitor=null"))
    return run_dir


def test_evaluation_on_the_device_matches_the_cpu(trained_run: Path, tmp_path: Path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={ckpt}", "robustness.corruptions=[]", "probe.max_iter=20"]
    summaries, features = {}, {}
    for name, device in (("cpu", "cpu"), ("device", DEVICE)):
        out = tmp_path / name
        summaries[name] = evaluate(compose_eval(*common, f"out_dir={out}", f"device={device}",
                                                "reuse_embeddings=false"))  # fmt: skip
        features[name] = np.load(out / "embeddings" / "query" / "features.npy")
    np.testing.assert_allclose(features["device"], features["cpu"], rtol=1e-3, atol=1e-4)
    for dim, cpu_row in summaries["cpu"]["per_dim"].items():
        device_row = summaries["device"]["per_dim"][dim]
        for metric in ("head_top1", "1nn", "map@10"):
            # One query may flip where two neighbours are equally close up to rounding.
            assert device_row[metric] == pytest.approx(cpu_row[metric], abs=1.01 / 128), metric
