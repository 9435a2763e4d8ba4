"""Size validation shared by the generator and the discriminator."""

from __future__ import annotations

__all__ = ["resolve_code_kernel"]


def resolve_code_kernel(image_size: int, code_kernel: int | None) -> int:
    """Check ``image_size`` and return the code kernel ``k = image_size // 16``.

    Both networks work at four scales below the image: the generator's background encoder and
    the discriminator's encoders halve the image four times (``S -> S/16``), and the gene/latent
    code maps, the ``k x k`` tiled embedding in the discriminator and its ``k x k`` logit
    convolutions all live at that coarsest scale. So ``code_kernel`` must equal
    ``image_size / 16``; the prototype's 128 / 8 is one instance of the rule.

    Args:
        image_size: side of the square image, a power of two >= 32.
        code_kernel: ``None`` to derive it, or an explicit value that must equal
            ``image_size // 16``.

    Raises:
        ValueError: ``image_size`` is not a power of two >= 32, or ``code_kernel`` is inconsistent.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 32 (e.g. 32, 64, 128), got {image_size}")
    k = image_size // 16
    if code_kernel is not None and code_kernel != k:
        raise ValueError(
            f"code_kernel must equal image_size // 16 = {k} for image_size {image_size}, got {code_kernel} "
            "(leave it unset to derive it)"
        )
    return k


def check_positive(**values: int) -> None:
    """Raise ValueError unless every given size is an int >= 1."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
