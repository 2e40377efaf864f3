"""A blend's pictures: the chosen column's image of every strip, and the strips themselves with
a header naming each column and a frame around each strip's chosen column."""

from __future__ import annotations

from pathlib import Path

import torch

from pegasus.images import image_format, save_grid, save_image_atomic


def save_blend(strips: torch.Tensor, columns: int | list[int], out: Path) -> tuple[Path, Path]:
    """Each strip's column (one for all, or one each) as `out`, and all strips as
    `<out>-strips<suffix>` with a header row naming each column and a frame around each
    strip's own."""
    out = Path(out)
    columns = [columns] * len(strips) if isinstance(columns, int) else list(columns)
    kth = save_grid(strips[torch.arange(len(strips)), torch.tensor(columns)], out)
    strips_path = strips_file(out)
    _save_labelled_strips(strips, columns, strips_path)
    return kth, strips_path


def strips_file(out: Path) -> Path:
    return Path(out).with_name(f"{Path(out).stem}-strips{Path(out).suffix}")


def check_blend_output(out: Path) -> None:
    """Both files a blend writes have a writable name and format, checked before sampling."""
    image_format(out)
    image_format(strips_file(out))


def _save_labelled_strips(strips: torch.Tensor, columns: list[int], path: Path) -> None:
    from PIL import Image, ImageDraw

    m, cols, _, res, _ = strips.shape
    scale = max(1, 48 // res)  # small images are enlarged so that the labels fit above them
    cell, pad, header = res * scale, 2, 16
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, header + m * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (strips.float().cpu() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for c in range(cols):
        x = pad + c * (cell + pad)
        draw.text((x + 2, 2), f"k={c}", fill="red" if c in columns else "black")
        for r in range(m):
            y = header + pad + r * (cell + pad)
            tile = Image.fromarray(pixels[r, c]).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x, y))
            if columns[r] == c:
                draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline="red")
    save_image_atomic(canvas, path)
