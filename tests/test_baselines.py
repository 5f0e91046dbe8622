"""Baselines from a plain model's features (SVD, random coordinates, low-rank classifier), the
frozen-backbone ablation, and evaluation straight after training."""

import csv
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import FAST, compose_train

from mrl.cli.train import train
from mrl.eval.baselines import (
    iter_baseline_features,
    low_rank_weight,
    principal_directions,
    project,
    random_coordinates,
    svd_classifier_rows,
)
from mrl.training.builders import build_model


def test_principal_directions_match_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ np.diag([5.0, 3.0, 2.0, 1.0, 0.5, 0.1]) + 4.0
    mean, components, variance = principal_directions(x.astype(np.float32), chunk_rows=64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance, s**2 / (len(x) - 1), rtol=1e-4)
    for j in range(6):  # same directions up to sign
        assert abs(abs(components[:, j] @ vt[j]) - 1.0) < 1e-6
    z = project(x, mean, components, 3)
    signs = np.sign(components[:, :3].T @ vt[:3].T).diagonal()
    np.testing.assert_allclose(z, (centred @ vt[:3].T) * signs, rtol=1e-4, atol=1e-4)


def test_svd_features_are_nested_and_random_features_are_seeded():
    rng = np.random.default_rng(1)
    db, q = (
        rng.normal(size=(200, 16)).astype(np.float32),
        rng.normal(size=(50, 16)).astype(np.float32),
    )
    svd = {m: (a, b) for m, a, b in iter_baseline_features("svd", db, q, [2, 4, 16])}
    np.testing.assert_allclose(svd[4][0][:, :2], svd[2][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(svd[16][1][:, :4], svd[4][1], rtol=1e-5, atol=1e-6)
    order = random_coordinates(16, seed=3)
    assert np.array_equal(order, random_coordinates(16, seed=3))
    assert not np.array_equal(order, random_coordinates(16, seed=4))
    rand = {m: (a, b) for m, a, b in iter_baseline_features("random", db, q, [2, 4], seed=3)}
    np.testing.assert_array_equal(rand[4][0], db[:, np.sort(order[:4])])
    assert set(np.sort(order[:2])) <= set(np.sort(order[:4]))  # nested choices
    with pytest.raises(ValueError, match="unknown feature baseline"):
        next(iter_baseline_features("pca", db, q, [2]))


def test_low_rank_classifier():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 12))
    for r in (1, 3):
        approx = low_rank_weight(w, r)
        assert np.linalg.matrix_rank(approx) == r
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        np.testing.assert_allclose(approx, (u[:, :r] * s[:r]) @ vt[:r], atol=1e-10)
    np.testing.assert_allclose(low_rank_weight(w, 8), w, atol=1e-10)  # rank(W) = 5 < 8

    q = rng.normal(size=(300, 12)).astype(np.float32)
    b = rng.normal(size=5)
    y = (q @ w.T + b).argmax(axis=1)  # labels the full classifier gets right
    rows = {(r["dim"], r["metric"]): r["value"] for r in svd_classifier_rows(w, b, q, y, [1, 8])}
    assert rows[(8, "head_top1")] == 1.0 and rows[(8, "head_top5")] == 1.0
    manual = float(((q @ low_rank_weight(w, 1).T + b).argmax(axis=1) == y).mean())
    assert rows[(1, "head_top1")] == pytest.approx(manual)
    assert rows[(1, "head_top1")] < 1.0


def test_frozen_backbone_stays_unchanged(tmp_path: Path):
    cfg = compose_train(tmp_path, *FAST, "model.freeze_encoder=true")
    model = build_model(cfg, num_classes=10, in_channels=1)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(
        max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    for key, value in model.encoder.state_dict().items():  # BatchNorm running stats included
        torch.testing.assert_close(value, encoder_before[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    assert all(not p.requires_grad for p in model.encoder.parameters())


def test_encoder_init_copies_a_trained_encoder(tmp_path: Path):
    first = compose_train(tmp_path / "a", *FAST, "trainer.max_epochs=1")
    train(first)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path / "b", *FAST, f"model.encoder_init={ckpt}")
    model = build_model(cfg, num_classes=10, in_channels=1)
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, saved[f"encoder.{key}"])
    bad = compose_train(tmp_path / "c", *FAST, "encoder.widths=[8,16,16,64]", "nesting=[2,64]",
                        f"model.encoder_init={ckpt}")  # fmt: skip
    with pytest.raises(Exception, match="does not fit the encoder"):
        build_model(bad, num_classes=10, in_channels=1)


@pytest.mark.slow
def test_full_size_model_is_evaluated_with_baselines_after_training(tmp_path: Path):
    cfg = compose_train(
        tmp_path, *FAST, "method=ff", "trainer.max_epochs=1",
        'eval_after=["retrieval.ks=[10]","retrieval.knn_ks=[1]","probe.max_iter=20"]',
    )  # fmt: skip
    train(cfg)
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    found = {(r["method"], int(r["dim"]), r["metric"]) for r in rows}
    assert ("ff", 32, "head_top1") in found and ("ff", 32, "map@10") in found
    for m in (2, 4, 8, 16, 32):
        assert ("svd", m, "probe_top1") in found and ("svd", m, "1nn") in found
        assert ("random", m, "probe_top1") in found and ("random", m, "map@10") in found
        assert ("svd_classifier", m, "head_top1") in found
    # At full rank the low-rank classifier is the trained classifier itself.
    value = {(r["method"], int(r["dim"]), r["metric"]): float(r["value"]) for r in rows}
    assert value[("svd_classifier", 32, "head_top1")] == pytest.approx(
        value[("ff", 32, "head_top1")], abs=1e-9
    )
