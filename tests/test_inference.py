"""`mrl.load`: a briefly trained small-CNN run and an authors'-format ResNet-50 checkpoint,
their `encode` checked against the encoder's output sliced (and normalised) by hand, `classify`
against the nested head's logits, and bad input refused in one line."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, compose_train
from omegaconf import OmegaConf

import mrl
from mrl.cli.train import train
from mrl.core.errors import ConfigError
from mrl.core.heads import MRLHead
from mrl.core.nesting import zero_prefix_counts
from mrl.encoders.resnet import resnet
from mrl.inference import ZeroPrefixWarning
from mrl.saved import load_saved


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("image") / "run"
    train(compose_train(run_dir, *FAST, "trainer.max_steps=2", "trainer.max_epochs=1"))
    return run_dir


def test_image_encode_and_classify_equal_the_model(image_run):
    model = mrl.load(image_run)
    assert model.dims == (2, 4, 8, 16, 32) and model.kind == "image"
    reference = load_saved(image_run / "checkpoints" / "last.ckpt").module
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = reference(x)
        logits = reference.head(z)
    for dim in (4, 32):
        got = model.encode(x, dim=dim, batch_size=2)
        want = z[:, :dim] / z[:, :dim].norm(dim=1, keepdim=True)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        raw = model.encode(x.numpy(), dim=dim, normalize=False)
        torch.testing.assert_close(raw, z[:, :dim], atol=1e-5, rtol=0)
        k = list(reference.head.nesting).index(dim)
        torch.testing.assert_close(model.classify(x, dim=dim, logits=True), logits[k],
                                   atol=1e-4, rtol=0)  # fmt: skip
        assert model.classify(x, dim=dim).tolist() == logits[k].argmax(1).tolist()


def test_bad_input_is_one_clear_error(image_run, tmp_path):
    model = mrl.load(image_run)
    x = torch.zeros(2, 1, 28, 28)
    for dim, problem in ((12, "not in the run's nesting"), (64, "larger than the representation")):
        with pytest.raises(ConfigError, match=problem):
            model.encode(x, dim=dim)
    with pytest.raises(ConfigError, match="add the batch axis"):
        model.encode(x[0])
    with pytest.raises(ConfigError, match="does not exist"):
        mrl.load(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="without checkpoints/last.ckpt"):
        mrl.load(tmp_path)
    junk = tmp_path / "junk.pt"
    torch.save({"weight": torch.zeros(2)}, junk)
    with pytest.raises(ConfigError, match="neither a checkpoint of mrl-train"):
        mrl.load(junk)


@pytest.mark.slow
def test_an_authors_checkpoint_loads_and_encodes_like_its_encoder(tmp_path):
    from mrl.saved.official import PAPER_NESTING, to_official_state_dict

    torch.manual_seed(0)
    encoder, head = resnet(depth=50, blurpool=True).eval(), MRLHead(2048, 3, PAPER_NESTING).eval()
    path = tmp_path / "mrl_r50.pt"
    torch.save({f"module.{k}": v for k, v in to_official_state_dict(encoder, head).items()}, path)
    model = mrl.load(path)
    assert model.dims == PAPER_NESTING and model.head.method == "mrl"
    # The ImageNet eval transform: 256 px shorter side, 224 px center crop, ImageNet statistics.
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        z = encoder((x[:, :, 16:240, 16:240] - mean) / std)
    torch.testing.assert_close(model.encode(x, dim=64), F.normalize(z[:, :64], dim=-1),
                               atol=1e-4, rtol=0)  # fmt: skip
    with torch.no_grad():
        want = head(z)[list(PAPER_NESTING).index(64)]
    torch.testing.assert_close(model.classify(x, dim=64, logits=True), want, atol=1e-3, rtol=0)


def test_pil_images_and_image_files_encode_like_the_same_pixels_as_a_tensor(image_run, tmp_path):
    from PIL import Image

    model = mrl.load(image_run)
    pixels = torch.randint(0, 256, (3, 28, 28), generator=torch.Generator().manual_seed(4))
    pixels = pixels.to(torch.uint8)
    pictures = [Image.fromarray(p.numpy(), mode="L") for p in pixels]
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(tmp_path / f"{i}.png")  # PNG: lossless, so the files hold the same pixels
        picture.save(paths[-1])
    want = model.encode(pixels.unsqueeze(1), dim=8)  # uint8 in [0, 255]: scaled by 1/255
    torch.testing.assert_close(model.encode(pixels.unsqueeze(1).float() / 255, dim=8), want)
    torch.testing.assert_close(model.encode(pictures, dim=8, batch_size=2), want, atol=1e-6,
                               rtol=0)  # fmt: skip
    torch.testing.assert_close(model.encode([str(p) for p in paths], dim=8), want, atol=1e-6,
                               rtol=0)  # fmt: skip
    rgb = [p.convert("RGB") for p in pictures]  # converted to the model's one channel
    torch.testing.assert_close(model.encode(rgb, dim=8), want, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="cannot read image"):
        model.encode([tmp_path / "missing.png"])
    with pytest.raises(ConfigError, match="wrap a single image in a list"):
        model.encode(pictures[0])


class FirstPixels(torch.nn.Module):
    """An encoder whose representation is the image's first 32 pixels: zero pixels make zero
    prefixes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :32]


def test_encode_warns_of_all_zero_prefixes_with_their_count(image_run):
    model = mrl.load(image_run)
    model.encoder = FirstPixels()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(5)) + 0.5
    x[1, 0, 0, :2] = 0  # zero prefix at dim 2
    x[3, 0, 0, :4] = 0  # zero prefix at dims 2 and 4
    with pytest.warns(ZeroPrefixWarning) as caught:
        z = model.encode(x, dim=2)
    assert [str(w.message) for w in caught] == [
        "2 of 5 inputs (40%) have an all-zero prefix at dim 2: their embeddings are zero vectors"
    ]
    assert caught[0].filename == __file__  # it points at the caller of encode
    assert z[[1, 3]].abs().sum() == 0 and torch.allclose(z[[0, 2, 4]].norm(dim=1), torch.ones(3))
    with pytest.warns(ZeroPrefixWarning, match=r"^1 of 5 inputs \(20%\) .* at dim 4:"):
        model.encode(x, dim=4, normalize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode(x, dim=8)
        model.encode(x[[0, 2, 4]], dim=2)


def test_zero_prefix_counts_match_a_count_by_hand():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 16)).astype(np.float32)
    features[rng.random(300) < 0.2, :2] = 0
    features[rng.random(300) < 0.1, :8] = 0
    features[7] = 0
    features[9, :3] = [0, 0, np.nan]  # not zero: NaN is a value, just a useless one
    dims = [1, 2, 4, 8, 16]
    want = {m: int(sum((row[:m] == 0).all() for row in features)) for m in dims}
    assert zero_prefix_counts(features, dims) == want
    assert want[16] == 1 and want[2] > want[4] > 0
    assert zero_prefix_counts(torch.from_numpy(features).half(), dims) == want
    assert zero_prefix_counts(np.empty((0, 4)), [2]) == {2: 0}


@pytest.mark.slow
def test_a_text_run_encodes_lists_of_strings_like_its_encoder(tmp_path):
    from test_text import compose_text

    from mrl.core.contrastive import MatryoshkaContrastiveLoss
    from mrl.text.encoders import HFTextEncoder, encode_texts, load_tokenizer
    from mrl.text.module import TextContrastiveModule

    cfg = compose_text(tmp_path / "run")
    encoder = HFTextEncoder()
    with torch.no_grad():  # off the bundled weights, so that loading them instead would fail
        for p in encoder.model.encoder.layer[-1].parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    module = TextContrastiveModule(
        encoder, MatryoshkaContrastiveLoss(list(cfg.nesting)), torch.optim.AdamW,
        nesting=list(cfg.nesting), config=OmegaConf.to_container(cfg, resolve=True),
    )  # fmt: skip
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "global_step": 0}, path)  # fmt: skip
    texts = ["a small dog", "the capital of France", "to run quickly", "a kind of tree"]
    model = mrl.load(tmp_path / "run")
    assert model.kind == "text" and model.dims == tuple(cfg.nesting)
    z = torch.from_numpy(encode_texts(encoder.eval(), load_tokenizer(), texts))
    for dim in (8, 64):
        got = model.encode(texts, dim=dim, batch_size=3)
        torch.testing.assert_close(got, F.normalize(z[:, :dim], dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode(texts, dim=64, normalize=False), z[:, :64],
                               atol=1e-5, rtol=0)  # fmt: skip
    with pytest.raises(ConfigError, match="pass \\[text, ...\\]"):
        model.encode("one string", dim=8)
    with pytest.raises(ConfigError, match="no classification head"):
        model.classify(texts)
