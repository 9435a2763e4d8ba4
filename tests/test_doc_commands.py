"""Every command in README.md and bundle/docs/*.md runs as written (issue 12, item 10).

The commands are extracted from the docs' ``bash`` code blocks (continuation lines joined, ``#`` comments and
``&&`` chains split) and from the command column of README's step table. Each one must appear in :data:`PLAN`:
either it runs, with the docs' placeholders (``D``, ``O``, ``PREPARED``, ``...``) replaced by real folders,
optional ``[...]`` parts left out and, for training and the demo download, tiny sizes appended (a one-epoch
run of a small model on a 4-patient demo: the command line, configs and overlays are the docs'), or it is
skipped for the reason given in :data:`SKIP`. A command added to the docs without an entry fails this test.
Commands run in-process (``rggan.cli.main`` and the ``fire`` entry of ``python -m monai.bundle``), in a
scratch folder with ``bundle/`` linked to the repository's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "bundle" / "docs").glob("*.md"))]

# a one-epoch run of a small model (appended to every training command)
TINY_BUNDLE = ["--epochs", "1", "--batch_size", "4", "--g_n_feat", "2", "--d_n_feat", "2", "--embed_dim", "8",
               "--g_ls", "4", "--num_workers", "0", "--image_size", "32", "--code_kernel", "2"]  # fmt: skip
TINY_TRAIN_CLI = ["--ep", "1", "--bs", "4", "--g_n_feat", "2", "--d_n_feat", "2", "--embed_dim", "8", "--g_ls", "4",
                  "--workers", "0", "--code_kernel", "2", "--set", "image_size=32"]  # fmt: skip
TINY_DEMO = ["--patients", "4"]
CHEAP_MAP = ["--num_latents", "1", "--n_boot", "20", "--traversal_top_n", "1"]

#: commands not run, and why
SKIP = {
    "python3 -m venv .venv": "creates the virtual environment this test already runs in",
    ". .venv/bin/activate": "shell activation of that environment",
    "pip install torch==2.13.0": "installs packages (network, minutes); this environment was installed so",
    "pip install -e .[dev]": "installs packages; the wheel install is checked separately (see the report)",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu": "installs torch (network)",
    "bash .ci/run": "runs this test suite (and installs): it would recurse",
    "python -m monai.bundle run --config_file ['bundle/configs/train.yaml','bundle/configs/demo_long.yaml'] "
    "--dataset_dir demo --output_dir out --epochs 300": "a long training run (300 epochs, ~1 h on a CPU)",
    "nice -n 19 python benchmarks/radiogenomic_map.py --ckpt out/models/model.pt --prepared out/prepared "
    "--num-latents 1 --deltas 0.5 0.1 --directions all 8 4 --default-directions 8 --out map.json":
        "a benchmark (minutes) on the model of the skipped 300-epoch run above",
    "torchrun --standalone --nnodes=1 --nproc_per_node=2 -m monai.bundle run training --config_file "
    "['bundle/configs/train.yaml','bundle/configs/multi_gpu_train.yaml'] --dataset_dir PREPARED":
        "long multi-process (DDP) training; tests/test_bundle_train.py runs two CPU ranks with gloo",
}  # fmt: skip

RUN_TRAINING = "python -m monai.bundle run training --config_file "
#: doc command (normalised) -> (placeholder replacements, appended arguments); None: run as written
PLAN: dict[str, tuple[dict[str, str], list[str]] | None] = {
    # README.md
    "rggan demo-data --output demo_data": ({}, TINY_DEMO),
    RUN_TRAINING + "['bundle/configs/train.yaml','bundle/configs/demo.yaml'] --dataset_dir demo_data "
    "--output_dir demo_out": ({}, TINY_BUNDLE),
    "rggan demo-data --output D --patients 100 --seed 7": ({"100": "4"}, []),
    "python -m monai.bundle run --config_file ['bundle/configs/train.yaml','bundle/configs/demo_map.yaml'] "
    "--dataset_dir D --output_dir O --seed 1": ({}, TINY_BUNDLE),
    "python -m monai.bundle run radiogenomic_map --config_file bundle/configs/radiogenomic_map.yaml --dataset_dir "
    "O/prepared --ckpt_file O/models/model.pt --output_dir O/map": ({}, CHEAP_MAP),
    "python -m monai.bundle run evaluate --config_file bundle/configs/evaluate.yaml --dataset_dir O/prepared "
    "--ckpt_file O/models/model.pt --output_dir O/eval": ({}, ["--map_latents", "1"]),
    # README.md, step table
    "rggan demo-data --output DIR": ({}, TINY_DEMO),
    "rggan prepare --input DIR --output PREPARED": ({}, ["--image-size", "32"]),
    RUN_TRAINING + "bundle/configs/train.yaml --dataset_dir PREPARED": ({}, [*TINY_BUNDLE, "--output_dir", "table"]),
    "rggan train --input DIR": ({}, [*TINY_TRAIN_CLI, "--output", "table_cli"]),
    "rggan export --checkpoint demo_out/models/model.pt --output exported": None,
    "rggan info": None,
    # bundle/docs/README.md
    RUN_TRAINING + "bundle/configs/train.yaml --dataset_dir PREPARED_OR_DOWNLOAD --output_dir OUT":
        ({"PREPARED_OR_DOWNLOAD": "demo_data"}, TINY_BUNDLE),
    "rggan train --input PREPARED_OR_DOWNLOAD --output ./ModelOut": ({"PREPARED_OR_DOWNLOAD": "demo_data"},
                                                                     TINY_TRAIN_CLI),
    "rggan demo-data --output D --patients 100 --seed S": ({"100": "4", "S": "7"}, []),
    "python -m monai.bundle run --config_file ['bundle/configs/train.yaml','bundle/configs/demo_map.yaml'] "
    "--dataset_dir D --output_dir O --seed T": ({"T": "1"}, TINY_BUNDLE),
    "python -m monai.bundle verify_metadata --meta_file bundle/configs/metadata.json --filepath "
    "bundle/schema/meta_schema_20240725.json": None,
    # bundle/docs/conditioning.md
    "rggan demo-data --output demo --patients 100 --seed 3": ({"100": "4"}, []),
    # bundle/docs/inference.md
    "python -m monai.bundle run inference --config_file bundle/configs/inference.yaml --dataset_dir prepared "
    "--ckpt_file out/models/checkpoint_epoch=500_iteration=4000.pt --output_dir out/inference --num_samples 4 "
    "--seed 12345": ({"prepared": "O/prepared", "out/models/checkpoint_epoch=500_iteration=4000.pt": "<ckpt>"}, []),
    "python -m monai.bundle run inference --config_file bundle/configs/inference.yaml --dataset_dir prepared "
    "--ckpt_file ... --output_dir out/new --rna_file new_patients.csv": ({"prepared": "O/prepared", "...": "<ckpt>"},
                                                                         []),
    "python -m monai.bundle run radiogenomic_map --config_file bundle/configs/radiogenomic_map.yaml --dataset_dir "
    "prepared --ckpt_file ... --output_dir out/map": ({"prepared": "O/prepared", "...": "<ckpt>"}, CHEAP_MAP),
    "python -m monai.bundle run evaluate --config_file bundle/configs/evaluate.yaml --dataset_dir prepared "
    "--ckpt_file ... --output_dir out/eval": ({"prepared": "O/prepared", "...": "<ckpt>"}, ["--map_latents", "1"]),
}  # fmt: skip


def _commands(text: str) -> list[list[str]]:
    """Shell commands of a Markdown text: its ``bash`` blocks, and README's step-table commands."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = tokens.index("&&") if "&&" in tokens else len(tokens)
                out.append(tokens[:cut])
                tokens = tokens[cut + 1 :]
    for cell in re.findall(r"^\| [a-z ]+ \| (`.*?) \|", text, flags=re.M):  # | step | `command` | output |
        out += [shlex.split(c) for c in re.findall(r"`([^`]+)`", cell) if c.startswith(("rggan ", "python "))]
    return [_drop_optional(c) for c in out if c]


def _drop_optional(tokens: list[str]) -> list[str]:
    """Leave out ``[--flag value ...]`` groups (optional arguments in the docs' notation)."""
    out, depth = [], 0
    for t in tokens:
        if t.startswith("[") and not t.startswith("['") and not t.startswith('["'):
            depth += 1
        if depth == 0:
            out.append(t)
        if depth and t.endswith("]") and not t.endswith("']") and not t.endswith('"]'):
            depth -= 1
    return out


def _key(tokens: list[str]) -> str:
    return " ".join(tokens)


def _runner() -> Callable[[list[str]], None]:
    import fire
    from monai.bundle import scripts

    from rggan.cli import main

    def run(argv: list[str]) -> None:
        if argv[0] == "rggan":
            assert main(argv[1:]) in (0, None), argv
        else:
            assert argv[:3] == ["python", "-m", "monai.bundle"], argv
            fire.Fire({"run": scripts.run, "verify_metadata": scripts.verify_metadata}, command=argv[3:])

    return run


def test_every_doc_command_is_planned():
    found = {_key(c) for doc in DOCS for c in _commands(doc.read_text(encoding="utf-8"))}
    unplanned = sorted(found - set(PLAN) - set(SKIP))
    assert not unplanned, f"doc commands neither run nor skipped by this test: {unplanned}"
    stale = sorted((set(PLAN) | set(SKIP)) - found)
    assert not stale, f"planned commands no longer in the docs: {stale}"


@pytest.mark.slow
def test_doc_commands_run_as_written(tmp_path, monkeypatch):
    import numpy as np
    from rggan.handlers import find_latest_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bundle").symlink_to(ROOT / "bundle")
    seen: list[str] = []
    for doc in DOCS:  # in document order: a doc's later commands use its earlier commands' outputs
        for tokens in _commands(doc.read_text(encoding="utf-8")):
            key = _key(tokens)
            if key in SKIP:
                continue
            replace, extra = PLAN[key] or ({}, [])
            if "<ckpt>" in replace.values():
                ckpt = find_latest_checkpoint(str(tmp_path / "O" / "models"))
                replace = {k: (ckpt if v == "<ckpt>" else v) for k, v in replace.items()}
            if "new_patients.csv" in tokens:  # a user's own table: two patients x the model's genes
                from rggan.data.rna import GeneTransform

                genes = GeneTransform.load(tmp_path / "O" / "prepared" / "gene_transform.json").genes
                rows = np.random.default_rng(0).uniform(1, 40, (2, len(genes)))
                lines = ["patient," + ",".join(genes)] + [f"NEW-{i}," + ",".join(f"{v:.3f}" for v in r)
                                                          for i, r in enumerate(rows)]  # fmt: skip
                (tmp_path / "new_patients.csv").write_text("\n".join(lines) + "\n")
            argv = [replace.get(t, t) for t in tokens] + extra
            if " ".join(argv) in seen:  # the same command in another doc (after placeholders): ran already
                continue
            seen.append(" ".join(argv))
            _runner()(argv)
    assert (tmp_path / "O" / "map" / "synthesis_map.csv").is_file()
    assert (tmp_path / "O" / "eval").is_dir() and (tmp_path / "out" / "new").is_dir()
    assert (tmp_path / "exported" / "model.onnx").is_file()
    assert (tmp_path / "ModelOut" / "models").is_dir()
    assert not (ROOT / "bundle" / "ModelOut").exists()
