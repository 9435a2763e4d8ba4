"""Tests of rggan.data.rna: the GEO RNA table reader and GeneTransform."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rggan.data.rna import ZHOU_METAGENES, GeneTransform, GeneTransformConfig, read_rna_table
from rggan.errors import InputError

PATIENTS = ["R01-023", "R01-024", "R01-006", "R01-153"]
ROWS = [  # gene, values per patient ("NA" = missing)
    ("LRIG1", "26.7037", "3.12635", "0", "36.4332"),
    ("HPGD", "1", "NA", "3", "5"),
    ("VIM", "100", "200", "300", "400"),
    ("CD44", "7", "7", "7", "7"),
]


def _write(path: Path, header: list[str], rows: list[tuple[str, ...]], sep: str = "\t") -> Path:
    text = sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _expected() -> pd.DataFrame:
    data = {g: [float("nan") if v == "NA" else float(v) for v in vals] for g, *vals in ROWS}
    return pd.DataFrame(data, index=pd.Index(PATIENTS, name="patient")).rename_axis(columns="gene")


def _frame(values: dict[str, list[float]], patients: list[str]) -> pd.DataFrame:
    return pd.DataFrame(values, index=patients, dtype=float)


# ---------------------------------------------------------------- reader


@pytest.mark.parametrize("first_cell", ["", "gene", None], ids=["empty", "label", "n-1"])
@pytest.mark.parametrize("name", ["GSE103584_R01_NSCLC_RNAseq.txt.gz", "GSE103584_R01_NSCLC_RNAseq.txt"])
def test_header_variants_parse_to_same_frame(tmp_path: Path, first_cell: str | None, name: str) -> None:
    header = PATIENTS if first_cell is None else [first_cell, *PATIENTS]
    table = read_rna_table(_write(tmp_path / name, header, ROWS))
    pd.testing.assert_frame_equal(table.expression, _expected())
    assert table.duplicate_genes == [] and table.duplicate_patients == [] and table.notes == []
    assert list(table.expression.index) == PATIENTS  # file order kept, IDs are str


def test_patients_by_genes_csv(tmp_path: Path) -> None:
    expected = _expected()
    path = tmp_path / "rna.csv"
    expected.rename_axis(index="Patient ID", columns=None).to_csv(path, na_rep="NA")
    table = read_rna_table(path, layout="patients_by_genes")
    pd.testing.assert_frame_equal(table.expression, expected)


def test_duplicate_genes_averaged_junk_rows_dropped_excel_noted(tmp_path: Path) -> None:
    rows = [*ROWS, ("VIM", "0", "NA", "100", "200"), ("_no_feature", "1", "1", "1", "1"), ("1-Mar", "1", "2", "3", "4")]
    table = read_rna_table(_write(tmp_path / "t.txt", ["gene", *PATIENTS], rows))
    assert table.duplicate_genes == ["VIM"]
    np.testing.assert_allclose(table.expression["VIM"], [50.0, 200.0, 200.0, 300.0])  # NA-aware mean
    assert "_no_feature" not in table.expression.columns
    assert list(table.expression.columns) == ["LRIG1", "HPGD", "VIM", "CD44", "1-Mar"]
    notes = " ".join(table.notes)
    assert "VIM" in notes and "1-Mar" in notes and "'_'-prefixed" in notes


def test_duplicate_patient_columns_detected_and_left_out(tmp_path: Path) -> None:
    header = ["gene", "R01-005", "R01-006", "R01-005"]
    table = read_rna_table(_write(tmp_path / "t.txt", header, [("VIM", "1", "2", "3")]))
    assert table.duplicate_patients == ["R01-005"]
    assert list(table.expression.index) == ["R01-006"]  # neither R01-005 nor pandas' R01-005.1
    assert any("R01-005" in n for n in table.notes)


def test_truncated_gz_names_file(tmp_path: Path) -> None:
    full = tmp_path / "full.txt.gz"
    rows = [(f"G{i}", *(f"{i}.5",) * 4) for i in range(5000)]
    data = _write(full, ["gene", *PATIENTS], rows).read_bytes()
    cut = tmp_path / "GSE103584_R01_NSCLC_RNAseq.txt.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="GSE103584_R01_NSCLC_RNAseq.txt.gz.*download it again"):
        read_rna_table(cut)


@pytest.mark.parametrize(
    "content, match",
    [(None, "not found"), (b"", "empty"), (b"gene\tR01-001\n", "no patient columns or no gene rows"),
     (b"gene\nVIM\nCD44\n", "no patient columns"), (b"not gzip at all", "damaged")],
    ids=["missing", "empty", "no-rows", "no-patients", "not-gzip"],
)  # fmt: skip
def test_unusable_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / ("t.txt.gz" if content == b"not gzip at all" else "t.txt")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        read_rna_table(path)
    assert str(path) in str(info.value)


def test_non_numeric_cell_names_gene_and_patient(tmp_path: Path) -> None:
    rows = [("VIM", "1", "2", "3", "4"), ("CD44", "1", "2", "n/a?", "4")]
    path = _write(tmp_path / "t.txt", ["gene", *PATIENTS], rows)
    with pytest.raises(InputError, match=r"'n/a\?'.*gene 'CD44', patient 'R01-006'") as info:
        read_rna_table(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- transform


def test_prototype_drops_na_genes_threshold_keeps_and_imputes() -> None:
    expr = _expected()
    proto = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig.prototype())
    assert proto.genes == ["LRIG1", "VIM", "CD44"]  # HPGD has an NA
    np.testing.assert_array_equal(proto.transform(expr), expr[["LRIG1", "VIM", "CD44"]].to_numpy(np.float32))

    kept = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig(max_na_fraction=0.5, log2=False, zscore=False))
    assert "HPGD" in kept.genes
    assert kept.transform(expr)[1, kept.genes.index("HPGD")] == 3.0  # median of 1, 3, 5
    zero = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig(0.5, log2=False, zscore=False, impute="zero"))
    assert zero.transform(expr)[1, zero.genes.index("HPGD")] == 0.0


def test_log2_zscore_numerics_by_hand() -> None:
    expr = _frame({"A": [0.0, 1.0, 3.0, 7.0], "B": [5.0, 5.0, 5.0, 5.0]}, PATIENTS)
    gt = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig())
    logs = np.array([0.0, 1.0, 2.0, 3.0])  # log2(x + 1)
    expected_a = (logs - 1.5) / np.sqrt(1.25)  # population std of 0..3
    out = gt.transform(expr)
    assert out.dtype == np.float32 and out.shape == (4, 2) and gt.num_genes == 2
    np.testing.assert_allclose(out[:, 0], expected_a, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], 0.0)  # std 0 -> 1, no division by zero


def test_fit_uses_training_patients_only() -> None:
    train, val = PATIENTS[:3], PATIENTS[3]
    expr = _frame({"A": [1.0, 2.0, 4.0, 8.0], "B": [1.0, np.nan, 3.0, 100.0], "C": [3.0, 1.0, 2.0, np.nan]}, PATIENTS)
    config = GeneTransformConfig(max_na_fraction=0.4, top_n_variance=2)
    before = GeneTransform.fit(expr, train, config)
    changed = expr.copy()
    changed.loc[val] = [1e6, np.nan, 5e5]
    after = GeneTransform.fit(changed, train, config)
    assert before.to_dict() == after.to_dict()
    np.testing.assert_array_equal(before.transform(expr.loc[train]), after.transform(changed.loc[train]))
    assert before.train_patients == train


def test_top_n_variance_picks_right_genes() -> None:
    expr = _frame({"low": [1, 1.1, 1, 1.1], "high": [0, 100, 0, 100], "mid": [0, 3, 0, 3], "flat": [2] * 4}, PATIENTS)
    gt = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig(top_n_variance=2))
    assert gt.genes == ["high", "mid"]  # table order kept


def test_gene_subset_and_absent_subset_genes() -> None:
    expr = _expected()
    gt = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig(genes=["VIM", "LRIG1"]))
    assert gt.genes == ["VIM", "LRIG1"]
    with pytest.raises(InputError, match="2 requested genes.*POSTN, VCAN"):
        GeneTransform.fit(expr, PATIENTS, GeneTransformConfig(genes=["VIM", "POSTN", "VCAN"]))
    assert len(ZHOU_METAGENES) == 21 and len(set(ZHOU_METAGENES)) == 21


def test_save_load_round_trip(tmp_path: Path) -> None:
    expr = _expected()
    gt = GeneTransform.fit(expr, PATIENTS[:3], GeneTransformConfig(max_na_fraction=0.5, genes=["HPGD", "LRIG1"]))
    path = tmp_path / "gene_transform.json"
    gt.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["gene_transform.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["genes"] == ["HPGD", "LRIG1"] and data["config"]["max_na_fraction"] == 0.5 and data["rggan_version"]
    loaded = GeneTransform.load(path)
    np.testing.assert_array_equal(loaded.transform(expr), gt.transform(expr))
    path.write_text("{broken")
    with pytest.raises(InputError, match="gene_transform.json"):
        GeneTransform.load(path)


def test_missing_genes_at_transform_time() -> None:
    expr = _expected()
    gt = GeneTransform.fit(expr, PATIENTS, GeneTransformConfig(max_na_fraction=0.5))
    with pytest.raises(InputError, match="2 of the 4 fitted genes.*HPGD, CD44"):
        gt.transform(expr.drop(columns=["HPGD", "CD44"]))
    filled = gt.transform(expr.drop(columns=["HPGD"]), fill_missing="median")
    np.testing.assert_allclose(filled[:, gt.genes.index("HPGD")], (gt.median - gt.mean)[1] / gt.std[1])


def test_negative_values_with_log2_rejected() -> None:
    expr = _frame({"A": [-2.0, 1.0, 3.0, 7.0]}, PATIENTS)
    with pytest.raises(InputError, match="log2=False"):
        GeneTransform.fit(expr, PATIENTS)
