"""Fréchet distance: agreement with torchmetrics, FID ordering on small sets, local Inception weight loading."""
import numpy as np
import pytest
import torch

from xomni.errors import XomniError
from xomni.metrics import fid


def _torchmetrics_fid(a: np.ndarray, b: np.ndarray) -> float:
    pytest.importorskip("torchmetrics.image.fid")
    return fid.torchmetrics_fid(a, b)  # identity "feature extractor" fed our features


@pytest.mark.parametrize("n,d,singular", [(400, 32, False), (300, 64, False), (50, 128, True)])
def test_frechet_matches_torchmetrics(n, d, singular):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(n, d)) * 1.3 + 0.2
    ours = fid.fid_from_features(a, b)
    theirs = _torchmetrics_fid(a, b)
    if singular:  # n < d: covariances are singular; torchmetrics' eigvals route is less stable there
        assert abs(ours - theirs) / theirs <= 1e-2
    else:
        assert abs(ours - theirs) / theirs <= 1e-3
    assert fid.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_known_value():
    # 1-D Gaussians: (m1-m2)^2 + (s1-s2)^2
    assert fid.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1)
    with pytest.raises(XomniError):
        fid.feature_stats(np.zeros((1, 4)))


@pytest.fixture(scope="module")
def renders():
    from xomni.data.presets import get_preset
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    p = get_preset("tiny")
    return {s: [render(sample_scene(p, 0, s, i)) for i in range(12)] for s in ("val", "test")}


def test_fid_ordering_small_sets(renders):
    ext, name = fid.get_extractor()
    assert name == "efficientnet-lite0-imagenet"
    fv, _ = fid.extract(renders["val"], ext, batch_size=6)
    ft, _ = fid.extract(renders["test"], ext, batch_size=6)
    size = renders["val"][0].size
    fn, _ = fid.extract(list(fid.noise_images(12, size)), ext, batch_size=6)
    assert fv.shape == (12, 1280)
    d_test, d_noise = fid.fid_from_features(fv, ft), fid.fid_from_features(fv, fn)
    assert d_test < d_noise / 3, (d_test, d_noise)


def test_extract_skips_unreadable(renders):
    from xomni.metrics.images import Item

    class Tiny(torch.nn.Module):
        size = (32, 32)

        def forward(self, x):
            return x.mean(dim=(2, 3))

    items = [Item("a", renders["val"][0]), Item("b", None, error="bad"), Item("c", renders["val"][1].convert("L"))]
    f, skipped = fid.extract(items, Tiny(), batch_size=2)
    assert f.shape == (2, 3) and skipped == 1


def test_inception_state_dict_and_torchscript(tmp_path):
    from xomni.metrics.inception import InceptionV3Features, load_inception
    torch.manual_seed(0)
    m = InceptionV3Features().eval()
    sd = {k: v for k, v in m.state_dict().items()}
    sd["AuxLogits.fc.weight"] = torch.zeros(1000, 768)  # torchvision files carry the aux head: ignored
    torch.save(sd, tmp_path / "inception.pth")
    x = torch.rand(1, 3, 64, 256)
    loaded = load_inception(tmp_path / "inception.pth")
    with torch.no_grad():
        ref = m(x)
        assert ref.shape == (1, 2048)
        assert torch.allclose(loaded(x), ref, atol=1e-5)
    # pytorch-fid weights (fc with 1008 classes) select the FID block variants
    sd2 = dict(sd, **{"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    torch.save(sd2, tmp_path / "pt_inception.pth")
    m2 = load_inception(tmp_path / "pt_inception.pth")
    assert m2.Mixed_5b.fid and m2.Mixed_7c.pool == "max"

    class Feat(torch.nn.Module):  # a generic TorchScript feature extractor
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 4)

    torch.jit.save(torch.jit.script(Feat()), str(tmp_path / "feat.pt"))
    with torch.no_grad():
        assert load_inception(tmp_path / "feat.pt")(x).shape == (1, 12)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(XomniError):
        load_inception(tmp_path / "junk.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(XomniError, match="InceptionV3"):
        load_inception(tmp_path / "other.pth")


def test_eval_fid_cli_interval(renders, tmp_path, monkeypatch, capsys):
    """`xomni eval fid --n-boot N` adds a 95 % interval around the point estimate; without it there is none."""
    import json

    from conftest import run_inproc
    for s in ("val", "test"):
        (tmp_path / s).mkdir()
        for i, im in enumerate(renders[s]):
            im.save(tmp_path / s / f"{i:02d}.png")
    args = ["eval", "fid", "--real", str(tmp_path / "val"), "--fake", str(tmp_path / "test")]
    r = run_inproc(args + ["--n-boot", "20"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ci95"][0] < res["fid"] < res["ci95"][1] and res["n_boot"] == 20 and res["n_fake"] == 12
    r = run_inproc(args, monkeypatch, capsys)
    assert r.returncode == 0 and "ci95" not in json.loads(r.stdout)
