"""A blend's pictures: the chosen column's image of every strip, and the strips themselves with
a header naming each column and a frame around each strip's chosen column; for a scored blend,
the judge's p(source) under each image and each strip's verdict at its end."""

from __future__ import annotations

from pathlib import Path

import torch

from pegasus.images import image_format, save_grid, save_image_atomic


def save_blend(strips: torch.Tensor, columns: int | list[int], out: Path,
               report=None) -> tuple[Path, Path]:
    """Each strip's column (one for all, or one each) as `out`, and all strips as
    `<out>-strips<suffix>` with a header row naming each column and a frame around each
    strip's own; with the judge's `report` (blend.JudgeReport), its numbers beside them."""
    out = Path(out)
    columns = [columns] * len(strips) if isinstance(columns, int) else list(columns)
    kth = save_grid(strips[torch.arange(len(strips)), torch.tensor(columns)], out)
    strips_path = strips_file(out)
    save_image_atomic(labelled_strips(strips, columns, report), strips_path)
    return kth, strips_path


def strips_file(out: Path) -> Path:
    return Path(out).with_name(f"{Path(out).stem}-strips{Path(out).suffix}")


def check_blend_output(out: Path) -> None:
    """Both files a blend writes have a writable name and format, checked before sampling."""
    image_format(out)
    image_format(strips_file(out))


def labelled_strips(strips: torch.Tensor, columns: list[int], report=None):
    """The strips as one PIL image: a header row naming each column, a frame around each
    strip's chosen one and, with a report, the judge's numbers."""
    from PIL import Image, ImageDraw

    m, cols, _, res, _ = strips.shape
    scale = max(1, 48 // res)  # small images are enlarged so that the labels fit above them
    cell, header = res * scale, 16
    pad = 12 if report is not None else 2  # room for p(source) under each image
    margin = 96 if report is not None else 0  # each strip's verdict at its right
    canvas = Image.new("RGB", (cols * (cell + 2) + 2 + margin, header + m * (cell + pad) + 2),
                       "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (strips.float().cpu() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for c in range(cols):
        x = 2 + c * (cell + 2)
        draw.text((x + 2, 2), f"k={c}", fill="red" if c in columns else "black")
        for r in range(m):
            y = header + 2 + r * (cell + pad)
            tile = Image.fromarray(pixels[r, c]).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x, y))
            if columns[r] == c:
                draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline="red")
            if report is not None:
                draw.text((x + 2, y + cell), f"{report.strip_probability[r][c]:.2f}", fill="black")
    if report is not None:
        _verdicts(draw, report, x=2 + cols * (cell + 2) + 4, top=header + 2, row=cell + pad)
    return canvas


def _verdicts(draw, report, x: int, top: int, row: int) -> None:
    """At each strip's right: whether it runs from the source to the target (on the judge)."""
    draw.text((x, 2), f"under each: p({report.source})", fill="black")
    for r, ok in enumerate(report.strip_ends):
        words = f"{report.source} to\n{report.target}" if ok else "not from\nsource to target"
        draw.text((x, top + r * row + row // 3), words, fill="darkgreen" if ok else "red")
