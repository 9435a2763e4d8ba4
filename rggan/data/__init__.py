"""Data: from the raw download (DICOM + RNA table) to the batches the trainer consumes.

Nothing is imported here, so importing one reader does not import the others (nor torch). The modules, in
data-flow order:

* :mod:`rggan.data.dicom` - index an NBIA download, resolve the CT of each SEG, CT geometry and HU, SEG masks.
* :mod:`rggan.data.rna` - the GEO RNA-seq table reader and the gene transform.
* :mod:`rggan.data.prepare` - the prepare step: crops, masks, background patches, RNA vectors, split, report.
* :mod:`rggan.data.datalist` - a prepared folder's ``datalist.json``; prepares a raw download on demand.
* :mod:`rggan.data.dataset` - the MONAI dataset of training samples (wrong pair, random base patch).
* :mod:`rggan.data.demo` - the built-in demo download.
"""
