"""``rggan train``: the training flags of the original research code, mapped onto MONAI bundle overrides.

Every flag of that code keeps its name, default and meaning (:data:`FLAG_TO_CONFIG` lists them); the run itself is
``monai.bundle.run`` on ``bundle/configs/train.yaml`` (plus any ``--config`` overlays), so
``rggan train --ep 2`` and ``python -m monai.bundle run training --config_file bundle/configs/train.yaml --epochs 2``
are the same training.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FLAG_TO_CONFIG", "build_parser", "bundle_dir", "overrides_from_args", "main"]

# original flag -> (bundle config id, type, default, help). Defaults are the original code's.
FLAG_TO_CONFIG: dict[str, tuple[str, type, Any, str]] = {
    "ep": ("epochs", int, 500, "Number of training epochs."),
    "bs": ("batch_size", int, 16, "Batch size."),
    "seed": ("seed", int, 12345, "Random seed."),
    "save_interval": ("save_interval", int, 50, "Save checkpoints every N epochs."),
    "g_lr": ("g_lr", float, 0.0001, "Learning rate of G's Adam optimizer."),
    "d_lr": ("d_lr", float, 0.0001, "Learning rate of D's Adam optimizer."),
    "g_n_feat": ("g_n_feat", int, 32, "Number of image feature maps for G."),
    "d_n_feat": ("d_n_feat", int, 64, "Number of image feature maps for D."),
    "embed_dim": ("embed_dim", int, 128, "Size of the RNA-sequence embedding from G's encoder network."),
    "g_ls": ("g_ls", int, 10, "Size of the random latent input of G."),
    "code_kernel": ("code_kernel", int, 8, "Size of the kernel for embedding and net codes (image size / 16)."),
    "c_i": ("c_i", float, 8.0, "Image loss coefficient."),
    "c_is": ("c_is", float, 1.0, "Image-Segment loss coefficient."),
    "c_isc": ("c_isc", float, 10.0, "Image-Segment-Code loss coefficient."),
    "c_bg": ("c_bg", float, 100.0, "Background reconstruction loss coefficient."),
    "workers": (
        "num_workers",
        int,
        4,
        "Number of processing units for the DataLoader; unset: the bundle's, 4 or one less than the CPUs if fewer",
    ),
    "cr": ("cache_rate", float, 1.0, "Cache ratio for MONAI CacheDataset."),
}


def bundle_dir() -> Path:
    """The bundle installed with rggan (package data of the wheel, or ``bundle/`` of the source tree).

    Raises:
        FileNotFoundError: no bundle found; the message says where it was looked for.
    """
    from rggan.paths import _MARKER, _candidates

    for path in _candidates():
        if (path / _MARKER).is_file():
            return path
    raise FileNotFoundError(
        f"No MONAI bundle in {' or '.join(str(p) for p in _candidates())}: reinstall rggan (the wheel ships the "
        "bundle as package data) or pass --bundle DIR."
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``rggan train`` (the original code's flags plus a few extras)."""
    p = argparse.ArgumentParser(prog="rggan train", description="Train the Radiogenomic GAN (MONAI bundle).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--device", default=None, help="e.g. 'cuda:0' or 'cpu' (default: cuda:0 if available)")
    p.add_argument("--input", default="./data", help="Location of data workspace: raw download or prepared folder.")
    p.add_argument("--output", default="./ModelOut", help="Model output folder.")
    for flag, (_, typ, default, help_text) in FLAG_TO_CONFIG.items():
        # Unset flags keep the bundle's value (the same default), so overlays such as demo.yaml still apply.
        p.add_argument(f"--{flag}", type=typ, default=None, help=f"{help_text} (default: {default})")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the one of this source tree)")
    p.add_argument(
        "--config", action="append", default=[], help="extra bundle config overlay (repeatable), e.g. configs/demo.yaml"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="ID=VALUE", help="any other bundle override, e.g. --set amp=true"
    )
    return p


def overrides_from_args(args: argparse.Namespace, notice=print) -> dict[str, Any]:
    """Turn parsed ``rggan train`` flags into ``monai.bundle.run`` overrides.

    Args:
        args: parsed flags.
        notice: called with a message when the device falls back to the CPU.

    Returns:
        Config id -> value.
    """
    import torch
    import yaml

    device = args.device
    if device is None:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            notice("rggan train: CUDA is not available, training on the CPU (pass --device to choose).")
    overrides: dict[str, Any] = {
        "device": f"$torch.device({device!r})",
        "dataset_dir": str(Path(args.input).expanduser().resolve()),
        "output_dir": str(Path(args.output).expanduser().resolve()),
    }
    for flag, (config_id, _, _, _) in FLAG_TO_CONFIG.items():
        if getattr(args, flag) is not None:
            overrides[config_id] = getattr(args, flag)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"rggan train: --set expects ID=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rggan train``.

    Returns:
        The process exit code.
    """
    from monai.bundle import run

    from rggan.errors import RGGANError

    args = build_parser().parse_args(argv)
    root = Path(args.bundle).resolve() if args.bundle else bundle_dir()
    configs = [str(root / "configs" / "train.yaml")]
    for extra in args.config:
        path = Path(extra)
        configs.append(str(path if path.is_file() else root / path))
    logging_file = root / "configs" / "logging.conf"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.verbose:  # the bundle's logging configuration at DEBUG level
                debug = Path(tmp) / "logging.conf"
                debug.write_text(logging_file.read_text().replace("level=INFO", "level=DEBUG"))
                logging_file = debug
            run(
                config_file=configs,
                meta_file=str(root / "configs" / "metadata.json"),
                logging_file=str(logging_file),
                **{"bundle_root": str(root), **overrides_from_args(args, notice=lambda m: print(m, file=sys.stderr))},
            )
    except Exception as err:
        # MONAI wraps errors raised while evaluating config expressions: report rggan's own message.
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, RGGANError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(f"rggan train: error: {cause}", file=sys.stderr)
        return cause.exit_code
    except KeyboardInterrupt:
        print("rggan train: interrupted; re-run the same command to resume from the last checkpoint.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
