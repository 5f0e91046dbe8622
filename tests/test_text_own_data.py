"""Text training on the researcher's own rows, end to end: `experiment=text/pairs` with hard
negatives and gradient caching, its evaluation sets scored per dim after training, and the same
numbers from `mrl-eval`, `mrl.load` and an exported sentence-transformers tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_text import QUIET, compose_text, requires_wordnet

from mrl.eval.text_metrics import evaluate_text_sets
from mrl.text.evaluation import load_eval_sets

WORDS = ["apple", "river", "engine", "violin", "desert", "glacier", "harbor", "lantern",
         "meadow", "orbit", "pepper", "quartz", "saddle", "tunnel", "velvet", "walnut"]  # fmt: skip
DIMS = [8, 16, 32, 64, 128, 256, 384]


def write_rows(folder: Path) -> dict[str, Path]:
    """Training rows with a hard negative each, a BEIR folder and an STS file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"anchor": f"what is a {w}", "positive": f"a {w} is a thing called {w}",
             "negative": f"a {WORDS[(i + 1) % len(WORDS)]} is not a {w}"}
            for i, w in enumerate(WORDS)]  # fmt: skip
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": w, "text": f"all about the {w}"}) + "\n"
        for i, w in enumerate(WORDS[:8])))  # fmt: skip
    (beir / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": f"tell me about {w}"}) + "\n"
        for i, w in enumerate(WORDS[:4])))  # fmt: skip
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4))
    )
    sts = folder / "sts.tsv"
    scored = [
        ("a cat", "a kitten", 4.5),
        ("a car", "a truck", 3.0),
        ("a song", "a tree", 0.5),
        ("red", "crimson", 4.8),
        ("bread", "stone", 0.2),
        ("a boat", "a ship", 4.0),
    ]
    sts.write_text("sentence1\tsentence2\tscore\n"
                   + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in scored))  # fmt: skip
    return {"train": train, "beir": beir, "sts": sts}


def values(rows: list[dict]) -> dict[tuple, float]:
    return {(r["set"], r["dim"], r["metric"]): r["value"] for r in rows}


def assert_same_rows(got: list[dict], want: list[dict], atol: float) -> None:
    a, b = values(got), values(want)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=atol), key


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory) -> tuple[Path, dict, dict[str, Path]]:
    from mrl.text.trainer import train_text

    root = tmp_path_factory.mktemp("own")
    files = write_rows(root / "data")
    run_dir = root / "run"
    tests = f"[{{path:{files['beir']},name:beir}},{{path:{files['sts']},kind:sts,name:sts}}]"
    cfg = compose_text(run_dir, "experiment=text/pairs", *QUIET[1:], "trainer.max_steps=3",
                       f"data.train={files['train']}", f"data.test={tests}",
                       f"data.val=[{{path:{files['sts']},kind:sts,name:sts}}]",
                       "data.batch_size=4", "module.grad_cache_chunk=3", "logger=csv",
                       "data.prompts.query='query: '",
                       "data.prompts.document='passage: '")  # fmt: skip
    assert cfg.module.distill_weight > 0 and cfg.optimizer.lr == pytest.approx(2e-5)
    results = train_text(cfg)
    return run_dir, results, files


def test_own_rows_train_with_negatives_and_grad_cache_and_score_every_set_per_dim(pairs_run):
    from mrl.training.loggers import wandb_key

    run_dir, results, _ = pairs_run
    on_disk = json.loads((run_dir / "results.json").read_text())
    rows = on_disk["eval_sets"]
    assert rows == results["eval_sets"]
    expected = {("beir", m, k) for m in DIMS for k in ("ndcg@10", "mrr@10", "map@100",
                                                       "recall@100")}  # fmt: skip
    expected |= {("sts", m, k) for m in DIMS for k in ("spearman", "pearson")}
    assert set(values(rows)) == expected
    for r in rows:
        if r["dim"] == 384 and r["value"]:
            assert r["retention"] == pytest.approx(100.0)
        elif r["value"] is not None and r["retention"] is not None:
            full = values(rows)[(r["set"], 384, r["metric"])]
            assert r["retention"] == pytest.approx(100 * r["value"] / full, rel=1e-6)
    assert [p["dim"] for p in on_disk["per_dim"]] == DIMS
    assert on_disk["per_dim"][3]["beir/ndcg@10"] == values(rows)[("beir", 64, "ndcg@10")]
    table = pd.read_csv(run_dir / "eval" / "text_sets.csv")
    assert len(table) == len(rows) and set(table["set"]) == {"beir", "sts"}
    metrics = pd.read_csv(next(run_dir.glob("csv/**/metrics.csv")))
    assert "test/beir-ndcg10@64" in metrics.columns and "test/sts-spearman_kept@8" in metrics
    assert metrics["test/beir-ndcg10@64"].dropna().iloc[0] == pytest.approx(
        values(rows)[("beir", 64, "ndcg@10")]
    )
    assert wandb_key("test/beir-ndcg10@64") == "test-beir-ndcg10/dim0064"
    assert metrics["val/sts-spearman@384"].notna().sum() == 1  # the val set, at the epoch's end


def test_mrl_eval_load_and_an_exported_tier_score_the_run_identically(pairs_run, tmp_path):
    from conftest import compose_eval

    import mrl
    from mrl.cli.evaluate import evaluate
    from mrl.cli.export import build_parser
    from mrl.cli.export import run as export

    run_dir, results, files = pairs_run
    want = results["eval_sets"]
    summary = evaluate(compose_eval(f"ckpt_path={run_dir}", f"out_dir={tmp_path / 'eval'}"))
    assert_same_rows(summary["rows"], want, atol=1e-6)
    assert pd.read_csv(tmp_path / "eval" / "eval" / "text_sets.csv").shape[0] == len(want)
    # Other sets than the run's own, named on the command line.
    sts_only = f"text_sets=[{{path:{files['sts']},kind:sts,name:sts}}]"
    other = evaluate(compose_eval(f"ckpt_path={run_dir}", f"out_dir={tmp_path / 'other'}",
                                  sts_only))  # fmt: skip
    assert_same_rows(other["rows"], [r for r in want if r["set"] == "sts"], atol=1e-6)

    sets = load_eval_sets([{"path": str(files["beir"]), "kind": "beir", "name": "beir"},
                           {"path": str(files["sts"]), "kind": "sts", "name": "sts"}])  # fmt: skip
    model = mrl.load(run_dir)
    assert model.prompts == {"query": "query: ", "document": "passage: "}

    def loaded(texts: list[str], role: str) -> np.ndarray:
        return model.encode(texts, normalize=False, role=role).numpy()

    assert_same_rows(evaluate_text_sets(loaded, sets, DIMS), want, atol=1e-5)

    # A sentence-transformers tier of mrl-export at dim 64: its vectors are the run's dim-64 ones.
    from sentence_transformers import SentenceTransformer

    export(build_parser().parse_args([str(run_dir), "--dims", "64", "--out",
                                      str(tmp_path / "tiers")]))  # fmt: skip
    tier = SentenceTransformer(str(tmp_path / "tiers" / "st"), device="cpu", truncate_dim=64)

    def exported(texts: list[str], role: str) -> np.ndarray:
        vectors = tier.encode(texts, prompt=model.prompts[role], normalize_embeddings=True)
        assert vectors.shape[1] == 64  # the tier as the README loads it
        return vectors

    got = evaluate_text_sets(exported, sets, [64])
    at_64 = [{**r, "retention": None} for r in want if r["dim"] == 64]
    assert_same_rows(got, at_64, atol=1e-4)


def test_distillation_starts_at_zero_and_its_teacher_stays_the_base_model(pairs_run):
    from mrl.saved import load_saved
    from mrl.text.builders import build_text_run

    run_dir, _, files = pairs_run
    saved = load_saved(run_dir)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("teacher" in k for k in ckpt["state_dict"])
    cfg = compose_text(run_dir / "again", "experiment=text/pairs", f"data.train={files['train']}",
                       "data.batch_size=4", "module.distill_nesting=[384]")  # fmt: skip
    built = build_text_run(cfg)
    module = built.model.eval()
    batch = next(iter(built.datamodule.train_dataloader()))
    inputs, _ = module.loss_inputs(batch)
    # Student = teacher before any step: every similarity is the base model's own.
    assert float(module.auxiliary_loss(batch, inputs)) == pytest.approx(0.0, abs=1e-6)
    base = [p.detach().clone() for p in module.teacher[0].parameters()]
    trained = saved.encoder.state_dict()
    student = module.encoder.state_dict()
    assert any(not torch.equal(trained[k], student[k]) for k in student)  # the run did learn
    module.train()
    module.training_step(batch, 0).backward()
    assert all(p.grad is None for p in module.teacher[0].parameters())
    assert all(torch.equal(a, b) for a, b in zip(base, module.teacher[0].parameters()))


@requires_wordnet
def test_the_reverse_dictionary_through_the_beir_path_gives_the_retrieval_metrics():
    """WordNet's reverse dictionary as a BEIR set: trec_eval's recall@10 and MAP@10 equal the
    package's recall@10 and standard mAP@10 (every query has at most 10 relevant lemmas)."""
    from mrl.eval.retrieval import evaluate_retrieval
    from mrl.eval.text_sets import RetrievalSet
    from mrl.text.data import WordNetPairsDataModule
    from mrl.text.wordnet import reverse_dictionary

    rd = reverse_dictionary(WordNetPairsDataModule(limit_test=60, seed=0).split("test"))
    rng = np.random.default_rng(0)
    q = rng.standard_normal((len(rd.queries), 32)).astype(np.float32)
    d = rng.standard_normal((len(rd.database), 32)).astype(np.float32)
    d[: len(q)] += 2 * q[np.argsort(rd.query_labels)][: len(d)]  # some signal
    labels = rd.database_labels.tolist()
    qrels = {f"q{i}": {f"d{j}": 1 for j, lab in enumerate(labels) if lab == ql}
             for i, ql in enumerate(rd.query_labels.tolist())}  # fmt: skip
    assert max(len(v) for v in qrels.values()) <= 10
    beir = RetrievalSet("rd", {f"q{i}": t for i, t in enumerate(rd.queries)},
                        {f"d{j}": t for j, t in enumerate(rd.database)}, qrels)  # fmt: skip

    def encode(texts: list[str], role: str) -> np.ndarray:
        return q if role == "query" else d

    ours = values(evaluate_text_sets(encode, [beir], [8, 32], map_k=10, recall_k=10))
    today = evaluate_retrieval(d, rd.database_labels, q, rd.query_labels, dims=[8, 32],
                               ks=(10,), knn_ks=(1,), backend="exact")  # fmt: skip
    for row in today:
        name = {"recall@10": "recall@10", "map_standard@10": "map@10"}.get(row["metric"])
        if name:
            assert ours[("rd", row["dim"], name)] == pytest.approx(row["value"], abs=1e-6)


def test_a_bad_training_file_is_one_line_before_any_model_loads(tmp_path: Path):
    empty = tmp_path / "rows.jsonl"
    empty.write_text("")
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mrl-train-text")), "experiment=text/pairs",
         f"data.train={empty}", f"paths.output_root={tmp_path / 'out'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(empty) in lines[0] and "empty" in lines[0]
    assert "Loading weights" not in done.stdout + done.stderr


def test_only_a_model_checkpoint_callback_turns_lightnings_checkpoint_copies_on():
    from omegaconf import OmegaConf

    from mrl.text.trainer import asks_for_checkpoints

    progress = {"progress_bar": {"_target_": "mrl.training.progress.ProgressReport"}}
    saving = {"best": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint"}}
    assert not asks_for_checkpoints(OmegaConf.create({"callbacks": {}}))
    assert not asks_for_checkpoints(OmegaConf.create({"callbacks": progress}))
    assert asks_for_checkpoints(OmegaConf.create({"callbacks": {**progress, **saving}}))
