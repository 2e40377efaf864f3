"""`folder:PATH`: one sub-folder per class, images in any format Pillow reads."""

from __future__ import annotations

from pathlib import Path

import torch

from pegasus.errors import UserError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def folder_classes(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{root} has no class sub-folders; put each class's images in "
                        f"{root}/<class name>/")
    return classes


def read_folder(root: Path, classes: list[str], res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of the asked classes, square-cropped at the centre and resized to `res`."""
    from PIL import Image, UnidentifiedImageError

    from pegasus.data.transforms import resize_square

    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (Path(root) / name).rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise UserError(f"class folder {Path(root) / name} holds no images "
                            f"({', '.join(sorted(EXTENSIONS))})")
        for path in files:
            try:
                with Image.open(path) as im:
                    rgb = im.convert("RGB")
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
                raise UserError(f"cannot read image {path}: {e}; remove or replace it") from None
            tensor = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            tensor = tensor.view(rgb.height, rgb.width, 3).permute(2, 0, 1)
            images.append(resize_square(tensor[None], res)[0])
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)
