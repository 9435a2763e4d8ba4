"""Export of the generator: model.pt round trip and ONNX output equal to the eager model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rggan.cli import main as cli_main
from rggan.networks import RGGenerator, init_weights


def _trained_like_generator() -> RGGenerator:
    torch.manual_seed(0)
    g = RGGenerator(20, embed_dim=16, latent_size=5, g_n_feat=4, image_size=32).apply(init_weights)
    g.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            g(torch.randn(4, 20), torch.randn(4, 5), torch.rand(4, 1, 32, 32) * 2 - 1)
    return g.eval()


def test_export_cli_writes_weights_and_onnx_matching_eager(tmp_path, capsys):
    g = _trained_like_generator()
    ckpt = tmp_path / "checkpoint_epoch=1_iteration=3.pt"
    torch.save({"ema_generator": g.state_dict(), "generator": {}}, ckpt)

    assert cli_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "out")]) == 0
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert state.keys() == g.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in g.state_dict().items())

    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["rna", "latent", "base"]
    torch.manual_seed(1)
    for batch in (1, 3):  # dynamic batch axis
        rna, z, base = torch.randn(batch, 20), torch.randn(batch, 5), torch.rand(batch, 1, 32, 32) * 2 - 1
        image, mask = session.run(None, {"rna": rna.numpy(), "latent": z.numpy(), "base": base.numpy()})
        with torch.no_grad():
            eager = g(rna, z, base)
        np.testing.assert_allclose(image, eager.image.numpy(), atol=1e-5)
        np.testing.assert_allclose(mask, eager.mask.numpy(), atol=1e-5)


def test_export_of_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "o")]) == 3
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoint_epoch=1_iteration=3.pt"
    torch.save({"ema_generator": _trained_like_generator().state_dict()}, ckpt)
    return ckpt


def test_export_without_onnx_packages_is_one_clear_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys

    ckpt = _checkpoint(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as on a plain install: `import onnxscript` fails
    assert cli_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "out")]) == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxscript" in err and 'pip install "rggan[export]"' in err, err
    assert "--no-onnx" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.name]  # no output folder, no staging left
    # --no-onnx needs no ONNX package
    assert cli_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "out"), "--no-onnx"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.pt"]


def test_failed_onnx_export_leaves_no_output(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        cli_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.name]  # model.pt was not written either


def test_export_extra_lists_the_onnx_packages():
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    export = cfg["options.extras_require"]["export"]
    assert all(name in export for name in ("onnx>=", "onnxscript>=", "onnxruntime>="))
    assert "%(export)s" in cfg.get("options.extras_require", "test", raw=True)


@pytest.mark.parametrize("texture_noise, film, harmonics", [(True, False, 0), (True, True, 0), (True, False, 4)])
def test_export_loads_a_generator_trained_with_texture_noise_film_and_margin_lobes(tmp_path, texture_noise, film,
                                                                                   harmonics):  # fmt: skip
    """train.yaml trains with texture_noise (a 3-channel head) and margin lobes: `rggan export` loads the model."""
    from rggan.inference import load_generator

    net = RGGenerator(12, embed_dim=8, latent_size=4, g_n_feat=2, image_size=32, texture_noise=texture_noise,
                      film=film, margin_harmonics=harmonics)  # fmt: skip
    torch.save(net.state_dict(), tmp_path / "model.pt")
    loaded = load_generator(tmp_path / "model.pt")
    assert loaded.state_dict().keys() == net.state_dict().keys()
    assert loaded.margin_harmonics == harmonics  # read off the weights
    assert cli_main(["export", "--checkpoint", str(tmp_path / "model.pt"), "--output", str(tmp_path / "out"),
                     "--no-onnx"]) == 0  # fmt: skip
