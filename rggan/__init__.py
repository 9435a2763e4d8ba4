"""rggan: the Radiogenomic GAN (Xu et al. 2019) as MONAI software.

Sub-packages:
    rggan.data      DICOM/RNA readers, the prepare step and the built-in demo dataset.
    rggan.networks  generator and discriminator.
    rggan.handlers  Ignite handlers specific to RG-GAN (source folder ``handlers/``).
"""

__version__ = "0.1.0"
