"""Export the (EMA) generator: its weights as the bundle's ``models/model.pt`` and an ONNX model.

ONNX (``torch.onnx.export``) is the export format: TorchScript is deprecated in torch 2.13, and MONAI's
``ckpt_export``/``onnx_export`` build a single random input while the generator takes three
(``rna``, ``latent``, ``base``). The ONNX graph returns ``image`` and ``mask`` with a dynamic batch axis.
ONNX export needs the ``onnx`` and ``onnxscript`` packages (``pip install "rggan[export]"``);
:func:`require_onnx_packages` checks for them before anything is written.
"""

from __future__ import annotations

import importlib
import io
import os
from pathlib import Path

import torch
from torch import nn

from rggan.errors import DependencyError
from rggan.io import atomic_write
from rggan.staging import staged_output

__all__ = ["GeneratorForExport", "ONNX_PACKAGES", "require_onnx_packages", "save_generator_weights", "export_onnx",
           "export_generator"]

#: packages ``torch.onnx.export(dynamo=True)`` needs (the ``export`` extra of rggan)
ONNX_PACKAGES = ("onnx", "onnxscript")


def require_onnx_packages() -> None:
    """Raise :class:`~rggan.errors.DependencyError` naming the missing ONNX packages and how to install them."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DependencyError(
            f"ONNX export needs the package(s) {', '.join(missing)}, which are not installed: "
            'pip install "rggan[export]" (or pass --no-onnx to write only model.pt).'
        )


class GeneratorForExport(nn.Module):
    """Wrap an ``RGGenerator`` so it returns the plain tuple ``(image, mask)`` exporters need.

    Args:
        generator: an ``RGGenerator`` (put in eval mode by :func:`export_onnx`).
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, rna: torch.Tensor, latent: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.generator(rna, latent, base)
        return out.image, out.mask


def save_generator_weights(generator: nn.Module, path: str | os.PathLike) -> Path:
    """Atomically save a generator's state dict (the Model-Zoo ``models/model.pt`` convention).

    Args:
        generator: the network (e.g. the EMA generator of training).
        path: destination file.

    Returns:
        The path written.
    """
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    return atomic_write(path, lambda handle: torch.save(state, handle))


def export_onnx(generator: nn.Module, path: str | os.PathLike, opset: int = 18) -> Path:
    """Export a generator to ONNX with inputs ``rna (B, G)``, ``latent (B, L)``, ``base (B, 1, S, S)``.

    Args:
        generator: an ``RGGenerator``; exported in eval mode (BatchNorm running statistics).
        path: destination ``.onnx`` file (written atomically).
        opset: ONNX opset version.

    Returns:
        The path written.
    """
    wrapper = GeneratorForExport(generator).eval()
    g = generator
    device = next(g.parameters()).device
    example = (
        torch.randn(2, g.num_genes, device=device),
        torch.randn(2, g.latent_size, device=device),
        torch.rand(2, 1, g.image_size, g.image_size, device=device) * 2 - 1,
    )
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapper,
        example,
        input_names=["rna", "latent", "base"],
        output_names=["image", "mask"],
        dynamic_shapes={"rna": {0: batch}, "latent": {0: batch}, "base": {0: batch}},
        opset_version=opset,
        dynamo=True,
    )

    def write(handle) -> None:
        buffer = io.BytesIO()
        program.save(buffer)
        handle.write(buffer.getvalue())

    return atomic_write(path, write)


def export_generator(generator: nn.Module, output_dir: str | os.PathLike, onnx: bool = True) -> list[Path]:
    """Write ``model.pt`` (and ``model.onnx``) into ``output_dir``, all or nothing.

    Both files are made in a staging folder beside ``output_dir`` and moved in only when every export
    succeeded (:func:`rggan.staging.staged_output`), so a failed ONNX export leaves no half-written output folder.

    Args:
        generator: the network (e.g. a checkpoint's EMA generator).
        output_dir: destination folder.
        onnx: also export ``model.onnx``.

    Returns:
        The paths written, in ``output_dir``.

    Raises:
        DependencyError: an ONNX package is missing (checked before anything is written).
    """
    if onnx:
        require_onnx_packages()
    output_dir = Path(output_dir)
    with staged_output(output_dir) as staging:
        names = [save_generator_weights(generator, staging / "model.pt").name]
        if onnx:
            names.append(export_onnx(generator, staging / "model.onnx").name)
    return [output_dir / name for name in names]
