"""`mrl-export`: ONNX tiers of a trained small CNN and of MiniLM at two dims, checked here
against PyTorch on inputs of their own (other batch sizes and sequence lengths than the export
traced), unit norm at the tier's dim, the sentence-transformers round trip, the int8 variant
within its stated tolerance, the encoder stored once for all tiers, the card's quality taken
from the run, and bad input refused in one line before anything is exported or written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

import mrl.export.card as cards
import mrl.export.graphs
from mrl.cli.export import main
from mrl.cli.train import train
from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.export import INT8_MIN_COSINE, PARITY_ATOL, export_run
from mrl.export.exporter import parity_images
from mrl.export.folder import load_export
from mrl.saved import image_input, load_saved
from mrl.text.encoders import encode_texts, tokenize

ort = pytest.importorskip("onnxruntime")

IMAGE_DIMS = [8, 32]  # of FAST's nesting [2, 4, 8, 16, 32]; the representation is 32-d
TEXT_DIMS = [32, 128]
# Not the export's own parity sentences: other words, lengths and batch sizes.
SENTENCES = [
    "a young person of either sex",
    "the branch of mathematics that studies shapes and spaces",
    "tree",
    "a written message addressed to a person or organization",
    "an edible fruit with a red or yellow skin and crisp white flesh",
]


def run_onnx(path: Path, feeds: dict, output: str = "embedding") -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run([output], feeds)[0]


def assert_unit_rows(x: np.ndarray, dim: int) -> None:
    assert x.shape[1] == dim
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def tier_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and p.name.startswith("dim_"))


def tree_size(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    )


# -- a briefly trained small-CNN run (mrl-train, synthetic data) -------------------------------


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("image") / "run"
    train(compose_train(run_dir, *FAST, "trainer.max_steps=3", "trainer.max_epochs=1"))
    return run_dir


@pytest.fixture(scope="module")
def image_export(image_run, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("image_export") / "tiers"
    return out, export_run(image_run, IMAGE_DIMS, out, head=True, int8=True)


def test_image_tiers_equal_the_trained_model(image_run, image_export):
    out, card = image_export
    assert tier_dirs(out) == ["dim_32", "dim_8"] and card["dims"] == IMAGE_DIMS
    # One model file (and its int8 variant) for both tiers; a tier folder holds its card and head.
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json", "dim_32", "dim_8", "model.int8.onnx", "model.onnx",
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "dim_8").iterdir()) == ["card.json", "head.onnx"]
    model = load_saved(image_run / "checkpoints" / "last.ckpt").module
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = model(x)
        logits = model.head(z)
    for dim in IMAGE_DIMS:
        got = run_onnx(out / "model.onnx", {"images": x.numpy()}, f"embedding_{dim}")
        assert_unit_rows(got, dim)
        want = F.normalize(z[:, :dim], dim=-1).numpy()
        np.testing.assert_allclose(got, want, atol=PARITY_ATOL)
        # The head classifies from the un-normalised prefix the model also outputs.
        prefix = run_onnx(out / "model.onnx", {"images": x.numpy()}, f"prefix_{dim}")
        np.testing.assert_allclose(prefix, z[:, :dim].numpy(), atol=PARITY_ATOL)
        head_logits = run_onnx(out / f"dim_{dim}" / "head.onnx", {"prefix": prefix}, "logits")
        want_logits = logits[list(model.nesting).index(dim)].numpy()
        np.testing.assert_allclose(head_logits, want_logits, atol=1e-4)


def test_image_int8_tiers_stay_within_their_tolerance(image_export):
    out, card = image_export
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(8)).numpy()
    for dim in IMAGE_DIMS:
        full = run_onnx(out / "model.onnx", {"images": x}, f"embedding_{dim}")
        small = run_onnx(out / "model.int8.onnx", {"images": x}, f"embedding_{dim}")
        assert_unit_rows(small, dim)
        cos = (full * small).sum(1)
        stated = card["tiers"][str(dim)]["int8"]
        assert stated["tolerance_min_cosine"] == INT8_MIN_COSINE
        assert cos.min() >= INT8_MIN_COSINE and stated["min_cosine"] >= INT8_MIN_COSINE
        assert stated["size_bytes"] == (out / "model.int8.onnx").stat().st_size


def test_image_card_has_the_contract_quality_and_parity(image_run, image_export):
    out, card = image_export
    results = json.loads((image_run / "results.json").read_text())
    for dim in IMAGE_DIMS:
        tier = json.loads((out / f"dim_{dim}" / "card.json").read_text())
        assert tier == card["tiers"][str(dim)]
        assert tier["inputs"][0]["shape"] == ["batch", 1, 28, 28]
        assert [o["shape"] for o in tier["outputs"]] == [["batch", dim], ["batch", dim]]
        assert [o["name"] for o in tier["outputs"]] == [f"embedding_{dim}", f"prefix_{dim}"]
        assert tier["output"] == f"embedding_{dim}"
        assert tier["files"] == {"model": "../model.onnx", "model_int8": "../model.int8.onnx",
                                 "head": "head.onnx"}  # fmt: skip
        assert tier["head"]["fed_by"] == f"prefix_{dim}"
        (row,) = [r for r in results["per_dim"] if r["dim"] == dim]
        assert tier["quality"]["test"] == {"top1": row["top1"], "top5": row["top5"]}
        assert tier["quality"]["eval"] is None  # the run was not evaluated
        assert tier["parity"]["max_abs_diff"] <= PARITY_ATOL
        assert tier["parity"]["inputs"].startswith("the first 16 images of the test split")
        assert tier["head"]["argmax_agreement"] == 1.0
    assert card["source"]["nesting"] == [2, 4, 8, 16, 32]
    assert card["source"]["representation_size"] == 32


def test_image_card_counts_the_all_zero_prefixes_of_its_inputs(image_run, image_export):
    _, card = image_export
    source = load_saved(image_run / "checkpoints" / "last.ckpt")
    x, note = parity_images(source)
    with torch.no_grad():
        z = source.encoder(x).numpy()
    for dim in IMAGE_DIMS:
        entry = card["tiers"][str(dim)]["zero_prefix"]
        count = int(sum(not row[:dim].any() for row in z))
        assert entry["parity_inputs"] == {
            "inputs": note, "rows": len(x), "count": count, "fraction": count / len(x),
        }  # fmt: skip
        assert entry["test_split"] is None  # the run was not evaluated


def test_the_zero_prefix_entry_takes_the_test_splits_share_from_mrl_eval():
    entry = cards.zero_prefix(1, 16, "given images", {"head_top1": 0.9, "zero_prefix": 0.048})
    assert entry["parity_inputs"]["fraction"] == 1 / 16 and entry["test_split"] == 0.048
    assert cards.zero_prefix(0, 16, "given images", None)["test_split"] is None


@pytest.mark.parametrize(
    "encoder, extra",
    [
        ("small_cnn", []),
        ("resnet18", ["encoder.small_input=true", "encoder.blurpool=true"]),
        ("vit_tiny", []),  # nn.MultiheadAttention: its eval-mode fused kernel has no ONNX form
    ],
)
def test_every_image_encoder_exports_with_the_datas_normalisation(tmp_path, encoder, extra):
    """CIFAR-10's mean and std come from its data module and are applied inside the graph."""
    cfg = compose_train(tmp_path, "data=cifar10", f"encoder={encoder}", *extra)
    datamodule = instantiate(cfg.data)
    contract = image_input(datamodule)
    assert (contract.mean, contract.std) == (datamodule.mean, datamodule.std)
    assert (contract.channels, contract.side) == (3, 32)
    net = instantiate(cfg.encoder)(in_channels=3).eval()
    module = mrl.export.graphs.ImageEmbedding(net, [16], contract.mean, contract.std)
    path = mrl.export.graphs.export_image_embedding(module, 3, 32, tmp_path / "m.onnx")
    x = torch.rand(3, 3, 32, 32)
    mean, std = torch.tensor(datamodule.mean), torch.tensor(datamodule.std)
    with torch.no_grad():
        z = net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    got = run_onnx(path, {"images": x.numpy()}, "embedding_16")
    np.testing.assert_allclose(got, F.normalize(z[:, :16], dim=-1).numpy(), atol=PARITY_ATOL)


def test_an_export_that_differs_from_pytorch_fails_and_leaves_nothing(
    image_run, tmp_path, capsys, monkeypatch
):
    # A graph without the re-normalisation: what sentence-transformers' truncation gives.
    monkeypatch.setattr(mrl.export.graphs, "truncate_and_normalise", lambda z, dim: z[:, :dim])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([str(image_run), "--dims", "8", "--out", str(out)])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from PyTorch" in err[0], err
    assert list(tmp_path.iterdir()) == []  # no tier, no temporary folder


# -- bad input: one line, exit status 2, nothing exported or written ---------------------------


@pytest.fixture
def no_export(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("export work started before the bad input was reported")

    monkeypatch.setattr(mrl.export.graphs.torch.onnx, "export", refuse)


@pytest.mark.parametrize(
    "dims, problem, fix",
    [
        (["12"], "dim 12 is not in the run's nesting [2, 4, 8, 16, 32]", "choose dims from it"),
        (["8", "64"], "dim 64 is larger than the representation (32 dims)", "choose dims of"),
        (["8", "8"], "repeat a dim", "give each dim once"),
    ],
)
def test_bad_dims_are_refused_in_one_line(
    image_run, tmp_path, capsys, no_export, dims, problem, fix
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([str(image_run), "--dims", *dims, "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mrl-export: error: "), err
    assert problem in err[0] and fix in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_other_bad_input_is_refused_in_one_line(image_run, tmp_path, capsys, no_export):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    cases = [
        ([str(tmp_path / "missing.ckpt"), "--dims", "8", "--out", str(tmp_path / "o")],
         "does not exist"),
        ([str(image_run), "--dims", "8", "--out", str(full)], "is not empty"),
        ([str(image_run), "--out", str(tmp_path / "o")], "--dims"),
    ]  # fmt: skip
    for argv, expected in cases:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


# -- MiniLM: a contrastive module's checkpoint --------------------------------------------------


@pytest.fixture(scope="module")
def minilm_checkpoint(tmp_path_factory):
    """A `TextContrastiveModule` around the bundled MiniLM, its last layer moved off the
    bundled weights (an export that read those would fail), saved as a checkpoint."""
    from test_text import compose_text

    from mrl.text.encoders import HFTextEncoder, load_tokenizer
    from mrl.text.module import TextContrastiveModule

    root = tmp_path_factory.mktemp("minilm")
    cfg = compose_text(root / "run")
    encoder = HFTextEncoder()
    with torch.no_grad():
        for p in encoder.model.encoder.layer[-1].parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    module = TextContrastiveModule(
        encoder,
        MatryoshkaContrastiveLoss(list(cfg.nesting)),
        torch.optim.AdamW,
        nesting=list(cfg.nesting),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    path = root / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "global_step": 0}, path)  # fmt: skip
    # The run's own test figures of these weights, which the model cards must repeat.
    per_dim = [{"dim": m, "recall@10": round(0.5 + m / 1000, 4)} for m in cfg.nesting]
    (root / "run" / "results.json").write_text(json.dumps({"per_dim": per_dim}))
    return path, encoder.eval(), load_tokenizer()


def minilm_checkpoint_nesting(checkpoint) -> list[int]:
    saved = torch.load(checkpoint[0], map_location="cpu", weights_only=False)
    return list(saved["hyper_parameters"]["config"]["nesting"])


@pytest.fixture(scope="module")
def text_export(minilm_checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("text_export") / "tiers"
    return out, export_run(minilm_checkpoint[0], TEXT_DIMS, out, int8=True)


@pytest.mark.slow
def test_minilm_tiers_equal_the_encoder_at_any_batch_and_length(minilm_checkpoint, text_export):
    _, encoder, tokenizer = minilm_checkpoint
    out, card = text_export
    assert tier_dirs(out) == ["dim_128", "dim_32"]
    z = torch.from_numpy(encode_texts(encoder, tokenizer, SENTENCES))
    batch = {k: v.numpy() for k, v in tokenize(tokenizer, SENTENCES, encoder.max_length).items()}
    for dim in TEXT_DIMS:
        want = F.normalize(z[:, :dim], dim=-1).numpy()
        path, output = out / "model.onnx", f"embedding_{dim}"
        padded = run_onnx(path, batch, output)
        assert_unit_rows(padded, dim)
        np.testing.assert_allclose(padded, want, atol=PARITY_ATOL)
        for i, sentence in enumerate(SENTENCES[:2]):  # one at a time: no padding at all
            one = tokenize(tokenizer, [sentence], encoder.max_length)
            got = run_onnx(path, {k: v.numpy() for k, v in one.items()}, output)
            np.testing.assert_allclose(got[0], want[i], atol=PARITY_ATOL)
        tier = card["tiers"][str(dim)]
        assert tier["parity"]["max_abs_diff"] <= PARITY_ATOL
        assert [i["name"] for i in tier["inputs"]] == ["input_ids", "attention_mask"]
        assert tier["output"] == output and tier["tokenizer"] == "../st"
        assert (out / f"dim_{dim}" / tier["tokenizer"] / "tokenizer.json").is_file()
        assert tier["quality"]["test"] == {"recall@10": round(0.5 + dim / 1000, 4)}


@pytest.mark.slow
def test_minilm_sentence_transformers_tiers_normalise_after_truncation(
    minilm_checkpoint, text_export
):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    _, encoder, tokenizer = minilm_checkpoint
    out, card = text_export
    z = torch.from_numpy(encode_texts(encoder, tokenizer, SENTENCES))
    st_dir = out / "st"
    # The tokenizer the cards name tokenizes as the training data did.
    saved = AutoTokenizer.from_pretrained(str(st_dir))
    assert saved(SENTENCES[1])["input_ids"] == tokenizer(SENTENCES[1])["input_ids"]
    # Its model card: the base model, every trained dim, the run's quality at each, and the
    # exported tiers with how each is loaded.
    readme = (st_dir / "README.md").read_text()
    assert "**Base model:** [sentence-transformers/all-MiniLM-L6-v2]" in readme
    nesting = ", ".join(str(m) for m in minilm_checkpoint_nesting(minilm_checkpoint))
    assert f"over the nested dims {nesting}:" in readme
    assert "every tier of the export, dims 32, 128:" in readme
    assert "SentenceTransformer(path, truncate_dim=m)" in readme
    assert "encode(texts, normalize_embeddings=True)" in readme
    assert "Base model:** [Unknown]" not in readme
    for dim in TEXT_DIMS:
        assert f"| {dim} | {0.5 + dim / 1000:.4f} |" in readme
        stated = card["tiers"][str(dim)]["sentence_transformers"]
        assert (stated["folder"], stated["truncate_dim"]) == ("../st", dim)
        assert stated["normalize_embeddings"] and stated["max_abs_diff"] <= PARITY_ATOL
        model = SentenceTransformer(str(st_dir), device="cpu", truncate_dim=dim)
        assert model.get_embedding_dimension() == dim
        got = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
        assert_unit_rows(got, dim)  # re-normalised after the truncation
        np.testing.assert_allclose(got, F.normalize(z[:, :dim], dim=-1).numpy(), atol=PARITY_ATOL)


@pytest.mark.slow
def test_minilm_int8_tiers_are_smaller_and_within_their_tolerance(minilm_checkpoint, text_export):
    _, encoder, tokenizer = minilm_checkpoint
    out, card = text_export
    batch = {k: v.numpy() for k, v in tokenize(tokenizer, SENTENCES, encoder.max_length).items()}
    for dim in TEXT_DIMS:
        full = run_onnx(out / "model.onnx", batch, f"embedding_{dim}")
        small = run_onnx(out / "model.int8.onnx", batch, f"embedding_{dim}")
        assert_unit_rows(small, dim)
        assert (full * small).sum(1).min() >= INT8_MIN_COSINE
        assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size / 2
        assert card["tiers"][str(dim)]["int8"]["min_cosine"] >= INT8_MIN_COSINE


@pytest.mark.slow
def test_minilm_tiers_store_the_encoder_once_and_each_equals_the_framework(
    minilm_checkpoint, text_export
):
    """Two tiers: one float ONNX model, one int8 model and one sentence-transformers folder hold
    the weights, each once; a tier adds a card of a few KB. Each tier's ONNX output and
    sentence-transformers output are what `mrl.load(...).encode(texts, dim=m)` returns."""
    from sentence_transformers import SentenceTransformer

    import mrl

    checkpoint, encoder, tokenizer = minilm_checkpoint
    out, card = text_export
    shared = ["model.int8.onnx", "model.onnx", "st"]
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "dim_128", "dim_32", *shared]
    # float32 weights once (the ONNX graph leaves out the unused pooler layer)
    weight_bytes = 4 * sum(p.numel() for p in encoder.parameters())
    encoder_bytes = tree_size(out / "model.onnx")
    assert 0.98 * weight_bytes < encoder_bytes < 1.02 * weight_bytes
    large = sorted(str(f.relative_to(out)) for f in out.rglob("*")
                   if f.is_file() and f.stat().st_size > encoder_bytes / 20)  # fmt: skip
    assert large == ["model.int8.onnx", "model.onnx", "st/model.safetensors"]
    assert 0.98 * weight_bytes < tree_size(out / "st/model.safetensors") < 1.02 * weight_bytes
    tiers = [tree_size(out / f"dim_{dim}") for dim in TEXT_DIMS]
    assert all(size < 0.05 * encoder_bytes for size in tiers), tiers
    one_encoder = sum(tree_size(out / name) for name in shared)
    assert tree_size(out) == one_encoder + tree_size(out / "card.json") + sum(tiers)
    assert tree_size(out) < 2.5 * weight_bytes  # float ONNX + safetensors + int8 ONNX, once
    assert {k: v["size_bytes"] for k, v in card["files"].items()} == {
        "model": encoder_bytes, "model_int8": tree_size(out / "model.int8.onnx"),
        "sentence_transformers": tree_size(out / "st"),
    }  # fmt: skip

    # What reads an export back finds every tier in the shared files, by its output.
    _, tiers = load_export(out)
    assert [(t.dim, t.precision, t.path, t.output) for t in tiers] == [
        (dim, precision, out / name, f"embedding_{dim}")
        for dim in TEXT_DIMS
        for precision, name in (("float32", "model.onnx"), ("int8", "model.int8.onnx"))
    ]

    model = mrl.load(checkpoint)
    batch = {k: v.numpy() for k, v in tokenize(tokenizer, SENTENCES, encoder.max_length).items()}
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for dim in TEXT_DIMS:
        want = model.encode(SENTENCES, dim=dim).numpy()
        tier = card["tiers"][str(dim)]
        (got,) = sess.run([tier["output"]], batch)
        np.testing.assert_allclose(got, want, atol=PARITY_ATOL)
        folder = out / f"dim_{dim}" / tier["files"]["sentence_transformers"]
        st = SentenceTransformer(str(folder), device="cpu", truncate_dim=dim)
        got = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
        np.testing.assert_allclose(got, want, atol=PARITY_ATOL)


def test_text_runs_without_a_head_or_of_other_tasks_are_refused(
    minilm_checkpoint, tmp_path, capsys, no_export
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([str(minilm_checkpoint[0]), "--dims", "32", "--out", str(out), "--head"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no classification head (a contrastive run): drop --head" in err[0]
    dual = tmp_path / "dual.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {"task": "dual_encoder"}}}, dual)
    with pytest.raises(SystemExit) as info:
        main([str(dual), "--dims", "32", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task=dual_encoder" in err[0]
    assert not out.exists()


def test_a_text_classifiers_head_is_rebuilt_from_its_checkpoint(tmp_path: Path):
    from test_text import compose_text

    from mrl.core.heads import MRLHead
    from mrl.core.losses import MatryoshkaLoss
    from mrl.text.encoders import HFTextEncoder
    from mrl.text.module import TextClassifierModule

    cfg = compose_text(tmp_path / "run", "text/task=classification", "method=mrl_e")
    head = MRLHead(384, 26, list(cfg.nesting), tied=True)
    module = TextClassifierModule(HFTextEncoder(), head, MatryoshkaLoss(), torch.optim.AdamW,
                                  config=OmegaConf.to_container(cfg, resolve=True))  # fmt: skip
    path = tmp_path / "c.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    source = load_saved(path)
    assert source.kind == "text" and source.nesting == tuple(cfg.nesting)
    assert source.head.tied and source.method == "mrl_e"
    torch.testing.assert_close(source.head.linear.weight, head.linear.weight, rtol=0, atol=0)
