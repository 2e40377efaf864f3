"""The built-in `sprites` dataset: procedurally drawn horses and birds, no download needed.

Each image is rasterised from signed distance functions (ellipses, capsules, triangles) on a
pixel grid, with anti-aliased edges, for a whole batch at once in torch. Everything random is
drawn from one generator seeded by (seed, class), so the same seed gives the same images at any
resolution and on any machine. Class names match CIFAR-10 and STL-10 (`horse`, `bird`), which
makes `--classes horse,bird` mean the same offline as on real data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CLASSES = ("horse", "bird")


def draw_sprites(name: str, count: int, res: int, *, seed: int = 0) -> torch.Tensor:
    """`count` images of class `name` at `res` x `res`, uint8, shaped (count, 3, res, res)."""
    if name not in CLASSES:
        raise ValueError(f"unknown sprites class {name!r}; valid classes: {', '.join(CLASSES)}")
    g = torch.Generator().manual_seed(seed * 1009 + CLASSES.index(name) + 1)
    draw, size = _DRAW[name]
    canvas = _Canvas(count, res, g, size)
    draw(canvas)
    return (canvas.image * 255).round().clamp(0, 255).to(torch.uint8)


class _Canvas:
    """A batch of images plus, for each image, a random placement of the object.

    Shapes are given in the object's own frame (x right, y down, unit ~ half the object size,
    facing right); the canvas maps pixels into that frame, so pose, scale, position, rotation
    and facing are one transform per image.
    """

    def __init__(self, count: int, res: int, g: torch.Generator, size: float) -> None:
        self.g, self.res, self.n = g, res, count
        self.image = _background(count, res, g)
        centres = (torch.arange(res) + 0.5) / res
        py, px = torch.meshgrid(centres, centres, indexing="ij")
        self.scale = self.uniform(0.26, 0.38) * size
        cx, cy = self.uniform(0.38, 0.62), self.uniform(0.42, 0.6)
        angle = self.uniform(-0.25, 0.25)
        facing = torch.where(torch.rand(count, 1, 1, generator=g) < 0.5, -1.0, 1.0)
        dx, dy = px - cx, py - cy
        cos, sin = angle.cos(), angle.sin()
        self.x = facing * (cos * dx + sin * dy) / self.scale
        self.y = (-sin * dx + cos * dy) / self.scale
        # Half a pixel in object units: the width of the anti-aliased edge.
        self.half_pixel = 0.5 / (res * self.scale)

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(self.n, 1, 1, generator=self.g)

    def paint(self, sdf: torch.Tensor, colour: torch.Tensor) -> None:
        """Alpha-blend `colour` (n, 3) where the signed distance is negative."""
        coverage = (0.5 - sdf / (2 * self.half_pixel)).clamp(0, 1).unsqueeze(1)
        self.image = self.image * (1 - coverage) + colour.view(-1, 3, 1, 1) * coverage


def _ellipse(c: _Canvas, cx, cy, rx, ry, tilt=0.0) -> torch.Tensor:
    dx, dy = c.x - cx, c.y - cy
    if not isinstance(tilt, float) or tilt != 0.0:
        cos, sin = torch.cos(torch.as_tensor(tilt)), torch.sin(torch.as_tensor(tilt))
        dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
    # Distance to the scaled unit circle: exact for circles, a close bound for the thin ellipses here.
    return (torch.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) - 1) * torch.minimum(
        torch.as_tensor(rx), torch.as_tensor(ry)
    )


def _capsule(c: _Canvas, ax, ay, bx, by, radius) -> torch.Tensor:
    """Distance to the segment a-b, minus the radius: a limb with rounded ends."""
    px, py = c.x - ax, c.y - ay
    ux, uy = bx - ax, by - ay
    t = ((px * ux + py * uy) / (ux * ux + uy * uy)).clamp(0, 1)
    return torch.sqrt((px - t * ux) ** 2 + (py - t * uy) ** 2) - radius


def _triangle(c: _Canvas, pts) -> torch.Tensor:
    """Signed distance (exact inside, a lower bound outside) to a triangle of either winding."""
    (ax, ay), (bx, by), (cx, cy) = pts
    # The sign of cross(B - A, C - A) tells on which side of each edge the inside lies.
    inside = torch.sign(torch.as_tensor((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)))
    edges = []
    for (sx, sy), (ex, ey) in zip(pts, pts[1:] + pts[:1], strict=True):
        dx, dy = ex - sx, ey - sy
        length = torch.sqrt(torch.as_tensor(dx * dx + dy * dy))
        edges.append(-inside * (dx * (c.y - sy) - dy * (c.x - sx)) / length)
    return torch.stack(torch.broadcast_tensors(*edges)).amax(0)


def _background(n: int, res: int, g: torch.Generator) -> torch.Tensor:
    """A vertical gradient between two random, muted colours."""
    top = _hsv(torch.rand(n, generator=g), 0.1 + 0.4 * torch.rand(n, generator=g),
               0.55 + 0.45 * torch.rand(n, generator=g))
    bottom = _hsv(torch.rand(n, generator=g), 0.1 + 0.5 * torch.rand(n, generator=g),
                  0.4 + 0.5 * torch.rand(n, generator=g))
    t = ((torch.arange(res) + 0.5) / res).view(1, 1, res, 1)
    return (top.view(n, 3, 1, 1) * (1 - t) + bottom.view(n, 3, 1, 1) * t).expand(n, 3, res, res)


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] to RGB, (n,) each to (n, 3)."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _dark_colour(n: int, g: torch.Generator) -> torch.Tensor:
    """A colour that stands out from the (light) backgrounds: dark and warm or near black."""
    hue = 0.02 + 0.1 * torch.rand(n, generator=g)
    return _hsv(hue, 0.3 + 0.6 * torch.rand(n, generator=g), 0.08 + 0.35 * torch.rand(n, generator=g))


def _draw_horse(c: _Canvas) -> None:
    colour = _dark_colour(c.n, c.g)
    sdfs = [_ellipse(c, 0.0, 0.0, 0.62, 0.26)]
    # Legs: front and back pairs, each swinging by its own angle (walk or gallop).
    for hip_x in (-0.45, -0.33, 0.33, 0.45):
        swing = c.uniform(-0.45, 0.45)
        length = c.uniform(0.65, 0.8)
        sdfs.append(_capsule(c, hip_x, 0.1, hip_x + length * torch.sin(swing),
                             0.1 + length * torch.cos(swing), 0.065))
    neck_angle = c.uniform(0.45, 0.9)  # from horizontal, head held high or low
    neck_x, neck_y = 0.5 + 0.55 * torch.cos(neck_angle), -0.1 - 0.55 * torch.sin(neck_angle)
    sdfs.append(_capsule(c, 0.45, -0.08, neck_x, neck_y, 0.13))
    sdfs.append(_ellipse(c, neck_x + 0.15, neck_y + 0.06, 0.24, 0.11, tilt=0.45))
    sdfs.append(_capsule(c, neck_x - 0.02, neck_y - 0.06, neck_x - 0.1, neck_y - 0.2, 0.04))  # ear
    tail_angle = c.uniform(0.5, 1.3)
    sdfs.append(_capsule(c, -0.6, -0.08, -0.6 - 0.5 * torch.cos(tail_angle),
                         -0.08 + 0.5 * torch.sin(tail_angle), 0.06))
    c.paint(torch.stack(torch.broadcast_tensors(*sdfs)).amin(0), colour)


def _draw_bird(c: _Canvas) -> None:
    body = _hsv(torch.rand(c.n, generator=c.g), 0.6 + 0.4 * torch.rand(c.n, generator=c.g),
                0.35 + 0.4 * torch.rand(c.n, generator=c.g))
    wing_colour = body * 0.6
    # Spread wings: two long triangles rising from the back, the far one drawn first.
    for offset, colour in ((0.18, wing_colour), (-0.05, body * 0.8)):
        lift = c.uniform(0.6, 1.4)  # wing angle: how high the tips reach
        tip_x = offset - 0.25 * torch.cos(lift) - 0.1
        tip_y = -0.15 - 0.95 * torch.sin(lift)
        c.paint(_triangle(c, [(offset - 0.3, -0.02), (tip_x, tip_y), (offset + 0.22, -0.05)]), colour)
    sdfs = [
        _ellipse(c, 0.0, 0.05, 0.5, 0.22),
        _ellipse(c, 0.48, -0.12, 0.17, 0.17),  # head
        _triangle(c, [(-0.4, 0.0), (-0.85, -0.12), (-0.8, 0.22)]),  # tail
    ]
    c.paint(torch.stack(torch.broadcast_tensors(*sdfs)).amin(0), body)
    beak = _hsv(0.1 + 0.04 * torch.rand(c.n, generator=c.g), torch.full((c.n,), 0.9),
                torch.full((c.n,), 0.95))
    c.paint(_triangle(c, [(0.6, -0.19), (0.6, -0.05), (0.88, -0.1)]), beak)
    c.paint(_ellipse(c, 0.53, -0.16, 0.035, 0.035), torch.zeros(c.n, 3))  # eye


# Each class with its drawing and its size relative to the canvas (birds are drawn smaller).
_DRAW: dict[str, tuple[Callable[[_Canvas], None], float]] = {
    "horse": (_draw_horse, 1.0),
    "bird": (_draw_bird, 1.25),
}

__all__ = ["CLASSES", "draw_sprites"]
