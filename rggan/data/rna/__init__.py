"""RNA-seq expression: the GEO GSE103584 table reader and the fitted gene transform.

:mod:`~rggan.data.rna.table` reads ``GSE103584_R01_NSCLC_RNAseq.txt.gz`` (genes in rows, patients in columns,
Cufflinks FPKM, ``NA`` for missing values) into a patients × genes frame and reports what it had to repair.
:mod:`~rggan.data.rna.transform` holds ``GeneTransform``, fitted on the training patients only, saved as JSON
beside the prepared dataset, and applied unchanged to every other patient (see ``docs/spec.md``, "RNA table").
Both are re-exported here.
"""

from rggan.data.rna.table import RNATable, read_rna_table
from rggan.data.rna.transform import ZHOU_METAGENES, GeneTransform, GeneTransformConfig

__all__ = ["ZHOU_METAGENES", "RNATable", "read_rna_table", "GeneTransformConfig", "GeneTransform"]
