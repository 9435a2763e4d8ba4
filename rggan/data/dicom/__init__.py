"""pydicom-based reader for a TCIA NSCLC-Radiogenomics download (NBIA Data Retriever output).

The tree is walked and every file's header is read; folder names, file names and ``metadata.csv``
are never interpreted, so both NBIA layouts (descriptive and classic) and renamed copies work.

One concept per module, all re-exported here:

* :mod:`~rggan.data.dicom.records` - the index's records (:class:`InstanceInfo`, :class:`SeriesInfo`,
  :class:`FileProblem`, :class:`DicomIndex`).
* :mod:`~rggan.data.dicom.headers` - one file's header: SOP class (:func:`classify_instance`) and the checks that
  make a file unusable.
* :mod:`~rggan.data.dicom.index` - :func:`index_dicom_tree` indexes a download: series grouped by
  SeriesInstanceUID and classified by SOPClassUID/Modality as ``"CT"``, ``"PT"``, ``"SEG"`` or ``"other"``;
  unreadable files are recorded in :attr:`DicomIndex.problems`, never raised. :func:`find_patient_segs`.
* :mod:`~rggan.data.dicom.references` - :func:`seg_references` and :func:`resolve_referenced_ct`: the CT series
  a SEG was drawn on (UIDs from every reference location, then fallbacks).
* :mod:`~rggan.data.dicom.geometry` - :func:`read_ct_geometry`: CT geometry from headers only (slices sorted by
  ascending ``dot(IPP, n)``, ``n = cross(IOP[:3], IOP[3:])``).
* :mod:`~rggan.data.dicom.ct` - :func:`read_ct_slices`: HU pixels of selected slices. Pixels equal to
  PixelPaddingValue (or inside the PixelPaddingValue..PixelPaddingRangeLimit range) are set to
  :data:`PADDING_HU` (-1024 HU, air).
* :mod:`~rggan.data.dicom.seg` - :func:`read_seg_mask`: a DICOM SEG as a ``uint8`` ``(Z, rows, cols)`` mask
  aligned with the sorted CT, frames placed by geometry (works for 3D Slicer, ePAD and conformant SEGs; its
  documented choices are in that module's docstring).
* :mod:`~rggan.data.dicom.values` - typed access to header values, shared by the modules above.

Conventions (see ``docs/architecture.md``): a CT volume is ``(Z, Y, X)``, slices sorted by ascending
position along the slice normal; masks use the same order.
"""

from rggan.data.dicom.ct import PADDING_HU, read_ct_slices, read_ct_volume
from rggan.data.dicom.geometry import CTGeometry, read_ct_geometry
from rggan.data.dicom.headers import CT_SOP_CLASSES, PET_SOP_CLASSES, SEG_SOP_CLASS, classify_instance
from rggan.data.dicom.index import find_patient_segs, index_dicom_tree
from rggan.data.dicom.records import DicomIndex, FileProblem, InstanceInfo, SeriesInfo
from rggan.data.dicom.references import SegReferences, resolve_referenced_ct, seg_frame_positions, seg_references
from rggan.data.dicom.seg import decode_seg_frames, read_seg_mask

__all__ = [
    "CT_SOP_CLASSES",
    "PET_SOP_CLASSES",
    "SEG_SOP_CLASS",
    "PADDING_HU",
    "InstanceInfo",
    "SeriesInfo",
    "FileProblem",
    "DicomIndex",
    "CTGeometry",
    "SegReferences",
    "index_dicom_tree",
    "classify_instance",
    "find_patient_segs",
    "seg_references",
    "resolve_referenced_ct",
    "seg_frame_positions",
    "read_ct_geometry",
    "read_ct_slices",
    "read_ct_volume",
    "read_seg_mask",
    "decode_seg_frames",
]
