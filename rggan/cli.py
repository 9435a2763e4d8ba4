"""The ``rggan`` command line: ``demo-data``, ``prepare``, ``train``, ``export``, ``info``.

Exit codes: 0 success, 1 unexpected error, 2 bad command line, 3 unusable input,
4 no usable data, 5 unsafe/unwritable output, 7 a needed optional package is missing, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rggan import __version__
from rggan.errors import InputError, RGGANError

__all__ = ["main", "build_parser"]


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from rggan.data.demo import generate_demo_dataset

    kwargs = {"patients": args.patients} if args.patients is not None else {}
    if args.genes is not None:
        kwargs["n_genes"] = args.genes
    summary = generate_demo_dataset(
        Path(args.output), seed=args.seed, layout=args.layout, realistic=args.realistic, progress=True, **kwargs
    )
    print(summary.describe())
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from rggan.data.prepare import PrepareConfig, prepare_dataset
    from rggan.data.rna import ZHOU_METAGENES, GeneTransformConfig

    genes = None
    if args.genes == "metagenes":
        genes = list(ZHOU_METAGENES)
    elif args.genes:
        genes = [g.strip() for g in Path(args.genes).read_text().split() if g.strip()]
    gene_config = GeneTransformConfig.prototype() if args.prototype_genes else GeneTransformConfig(
        max_na_fraction=args.max_na_fraction, genes=genes, top_n_variance=args.top_genes
    )
    try:
        config = PrepareConfig(
            image_size=args.image_size, num_bases=args.bases, seed=args.seed, val_fraction=args.val_fraction,
            crop_mm=args.crop_mm, genes=gene_config, permute_rna=args.permute_rna,
            margin_slices=args.margin_slices, margin_mm=args.margin_mm,
        )  # fmt: skip
    except ValueError as err:  # a setting out of range: say which, without a traceback
        raise InputError(f"bad prepare setting: {err}") from err
    result = prepare_dataset(
        args.input, args.output, config=config, rna_path=args.rna, workers=args.workers, progress=not args.quiet
    )
    if result.no_op:
        print(f"Up to date: nothing changed since the last prepare of {result.output_dir} ({result.seconds:.2f} s).")
    n_train = sum(r.split == "training" for r in result.patients)
    print(
        f"Prepared {len(result.included)} patients ({n_train} training, {len(result.included) - n_train} validation; "
        f"{len(result.prepared)} computed, {len(result.reused)} up to date), excluded {len(result.excluded)}, "
        f"skipped {len(result.skipped_files)} files in {result.seconds:.1f} s."
    )
    for patient, reason in result.excluded.items():
        print(f"  excluded {patient}: {reason}")
    print(f"Datalist: {result.datalist}\nReport:   {result.report.with_suffix('.txt')}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from rggan.networks import parameter_table

    sizes = {
        "num_genes": args.genes, "embed_dim": args.embed_dim, "latent_size": args.g_ls, "g_n_feat": args.g_n_feat,
        "d_n_feat": args.d_n_feat, "image_size": args.image_size,
    }  # fmt: skip
    print(f"rggan {__version__}: parameter counts for " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    for part, count in parameter_table(**sizes):
        print(f"  {part:<40} {count:>12,}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from rggan.export import export_generator, require_onnx_packages
    from rggan.inference import load_generator

    if not args.no_onnx:
        require_onnx_packages()  # before any work: one clear error, nothing written
    generator = load_generator(args.checkpoint, key=args.key)
    for path in export_generator(generator, args.output, onnx=not args.no_onnx):
        print(f"{'ONNX model' if path.suffix == '.onnx' else 'Generator weights'}: {path}")
    return 0


def _cmd_map_agreement(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from rggan.radiogenomic_map import map_agreement

    tables = []
    for folder in args.maps:
        path = Path(folder) / "synthesis_map.csv"
        if not path.is_file():
            raise SystemExit(
                f"rggan map-agreement: {path} not found (pass output folders of `run radiogenomic_map`)"
            )
        tables.append(pd.read_csv(path, index_col=0))
    result = map_agreement(tables)
    for p in result["pairs"]:
        print(f"{args.maps[p['a']]} ~ {args.maps[p['b']]}: Spearman {p['spearman']:.3f}")
    print(f"min {result['min_spearman']:.3f}, mean {result['mean_spearman']:.3f} over {result['genes']} genes")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _parser_with(*parents: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """An ``ArgumentParser`` class whose instances inherit ``parents``' arguments (for every sub-command)."""

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["parents"] = [*kwargs.get("parents", []), *parents]
            super().__init__(*args, **kwargs)

    return Parser


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``rggan`` command."""
    parser = argparse.ArgumentParser(prog="rggan", description="Radiogenomic GAN (Xu et al. 2019) on MONAI.")
    parser.add_argument("--version", action="version", version=f"rggan {__version__}", help="print the version")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also after the command)")
    # -v after the command too; SUPPRESS: an absent sub-command flag must not reset a -v given before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_parser_with(verbose))

    p = sub.add_parser("demo-data", help="write the built-in demo download (DICOM CT/SEG + RNA table)")
    p.add_argument("--output", required=True, help="folder to write the demo download into")
    p.add_argument("--patients", type=int, default=None, help="number of GAN-cohort patients (default: built-in)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--layout", choices=["descriptive", "classic"], default="descriptive", help="NBIA folder layout")
    p.add_argument("--realistic", action="store_true", help="512x512 CTs with >= 100 slices (for benchmarks)")
    p.add_argument(
        "--genes", type=int, default=None, metavar="N",
        help="genes in the RNA table (default 200; e.g. 5000 for the real data's regime, genes >> patients)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser("prepare", help="turn a TCIA/GEO download into a prepared training dataset")
    p.add_argument("--input", required=True, help="folder with the NBIA download and the GSE103584 RNA table")
    p.add_argument("--output", required=True, help="prepared dataset folder (outside --input)")
    p.add_argument("--rna", default=None, help="RNA table path (default: searched under --input)")
    p.add_argument("--image-size", type=int, default=128, help="crop/patch size in pixels (default 128)")
    p.add_argument("--bases", type=int, default=10, help="background patches per patient (default 10)")
    p.add_argument("--seed", type=int, default=12345, help="split and patch-position seed (default 12345)")
    p.add_argument("--crop-mm", type=float, default=None, help="fixed crop side in mm (default: 2x nodule box)")
    p.add_argument(
        "--permute-rna", type=int, default=None, metavar="SEED",
        help="negative control: shuffle the RNA profiles among the patients with this seed "
        "(breaks every gene-image link)",
    )  # fmt: skip
    p.add_argument(
        "--margin-slices", type=int, default=0, metavar="K",
        help="also store each patient's margin irregularity averaged over the tumour's slices within K of the "
        "nodule slice (training's shape_target slices; default 0: not measured)",
    )  # fmt: skip
    p.add_argument(
        "--margin-mm", type=float, default=0.0, metavar="MM",
        help="the same over the tumour's slices within MM of the nodule slice, in each patient's nearest whole "
        "number of slices (train.yaml: margin_mm 8; default 0: not measured; not with --margin-slices)",
    )  # fmt: skip
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation patients fraction (default 0.2)")
    p.add_argument("--max-na-fraction", type=float, default=0.0, help="drop genes with more NAs (default 0)")
    p.add_argument("--top-genes", type=int, default=None, help="keep the N most variable genes")
    p.add_argument("--genes", default=None, help="'metagenes' (Zhou et al. 21) or a file of gene symbols")
    p.add_argument("--prototype-genes", action="store_true", help="prototype gene rule: drop NA genes, raw FPKM")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("info", help="parameter counts of the networks")
    p.add_argument("--genes", type=int, default=5172, help="number of genes (default 5172, the prototype's)")
    p.add_argument("--embed_dim", type=int, default=128, help="gene embedding size (default 128)")
    p.add_argument("--g_ls", type=int, default=10, help="latent (noise) size of G (default 10)")
    p.add_argument("--g_n_feat", type=int, default=32, help="feature maps of G (default 32)")
    p.add_argument("--d_n_feat", type=int, default=64, help="feature maps of D (default 64)")
    p.add_argument("--image-size", dest="image_size", type=int, default=128, help="image side in pixels (default 128)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export the EMA generator of a checkpoint (model.pt + ONNX)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (models/checkpoint_*.pt) or model.pt")
    p.add_argument("--output", required=True, help="folder for model.pt and model.onnx")
    p.add_argument("--key", default="ema_generator", help="checkpoint entry to export (default: ema_generator)")
    p.add_argument("--no-onnx", action="store_true", help="only write model.pt")
    p.set_defaults(func=_cmd_export)

    # `rggan train ...` is dispatched to rggan.train_cli before parsing (it has its own flag table).
    p = sub.add_parser("map-agreement", help="agreement of synthesis maps (e.g. of several training seeds)")
    p.add_argument("maps", nargs="+", help="output folders of `run radiogenomic_map` (each with synthesis_map.csv)")
    p.add_argument("--output", default=None, help="also write the result as JSON to this file")
    p.set_defaults(func=_cmd_map_agreement)

    sub.add_parser(
        "train", help="train with the original research code's flags (runs the MONAI bundle); see `rggan train -h`"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rggan`` command.

    Returns:
        The process exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "train" in argv and set(argv[: argv.index("train")]) <= {"-v", "--verbose"}:
        from rggan.train_cli import main as train_main

        i = argv.index("train")
        return train_main(argv[:i] + argv[i + 1 :])  # its parser takes -v too
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except RGGANError as err:
        print(f"rggan {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"rggan {args.command}: interrupted; every file already written is complete.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
