"""rggan: the Radiogenomic GAN (Xu et al. 2019) as MONAI software.

Sub-packages (every module: docs/architecture.md):
    rggan.data         DICOM and RNA readers, the prepare step, the training dataset.
    rggan.demo         the built-in demo download with a planted answer.
    rggan.networks     generator and discriminator.
    rggan.radiogenomic the radiogenomic maps (correlation via synthesis, conventional).
    rggan.handlers     Ignite handlers specific to RG-GAN (source folder ``handlers/``).
"""

__version__ = "0.1.0"
