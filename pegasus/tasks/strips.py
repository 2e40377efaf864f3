"""Which column of a blend's strip is its pegasus, and how good a strip is, on the run's judge.

The winged-horses text writes column k = 9 of N = 15 and picked it by hand (11 for STL-10). The
default here is that choice scaled to any N, round(0.6 N), so that every N has one. With
`auto`, each strip takes its own column: where the judge's p(source) crosses 1/2 along it, or,
for a strip that never crosses, its most balanced column.

A strip's scores, from the judge's class probabilities and features of its N + 2 columns:
    monotonicity   the rank correlation of p(target) with the column (1: the target's share
                   only grows from left to right; -1: a reversed strip)
    balance        |p(source) - 1/2| at the strip's column (0: an even blend)
    smoothness     the mean distance between neighbouring columns' features, and its spread
                   (standard deviation): a strip that jumps at one column has a large spread.
                   This is the perceptual path length of the morphing literature (IMPUS,
                   DiffMorpher) on the judge's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pegasus.errors import FieldError

AUTO = "auto"


def default_column(n: int) -> int:
    """k = 9 at N = 15 (the winged-horses text), scaled: round(0.6 N), between 1 and N."""
    return min(max(round(0.6 * n), 1), n)


def resolve_column(k: int | str | None, n: int) -> int | str:
    """The column a blend of N writes: an int in 0 .. N + 1, `auto` (chosen per strip by the
    judge), or None for the default. A whole number written out (the command line's) is a
    column."""
    if k is None:
        return default_column(n)
    if isinstance(k, str):
        if k == AUTO:
            return AUTO
        try:
            k = int(k)
        except ValueError:
            raise FieldError("k", f"must be a column 0 .. N+1 = {n + 1} or auto, got {k!r}") from None
    if not 0 <= k <= n + 1:
        raise FieldError("k", f"must be between 0 and N+1 = {n + 1}, got {k}")
    return k


def crossing_columns(p_source: torch.Tensor) -> torch.Tensor:
    """(M,) each strip's column for `auto` from p(source) (M, N + 2): among the inner columns
    1 .. N, the one nearest 1/2 of the first pair that crosses it from above, else the one
    nearest 1/2 overall."""
    inner = p_source[:, 1:-1]
    off = (inner - 0.5).abs()
    columns = off.argmin(dim=1) + 1
    above = inner >= 0.5
    for strip in range(len(inner)):
        crossings = (above[strip, :-1] & ~above[strip, 1:]).nonzero()
        if len(crossings):
            c = int(crossings[0])
            columns[strip] = c + 1 + int(off[strip, c + 1] < off[strip, c])
    return columns


def monotonicity(p_target: torch.Tensor) -> torch.Tensor:
    """(M,) Spearman's rank correlation of each strip's p(target) (M, C) with the column."""
    ranks = p_target.argsort(dim=1).argsort(dim=1).double()
    columns = torch.arange(p_target.shape[1], dtype=torch.float64).expand_as(ranks)
    a = ranks - ranks.mean(dim=1, keepdim=True)
    b = columns - columns.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def smoothness(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, spread), each (M,): the distances between neighbouring columns' features (M, C, D)
    and their standard deviation along the strip."""
    steps = (features[:, 1:] - features[:, :-1]).double().norm(dim=2)
    return steps.mean(dim=1), steps.std(dim=1, correction=0)


@dataclass
class StripScores:
    """The means over a blend's strips, and the column each strip took."""

    columns: list[int]
    monotonicity: float
    balance: float
    smoothness: float
    smoothness_spread: float

    @classmethod
    def of(cls, p_source: torch.Tensor, p_target: torch.Tensor, features: torch.Tensor,
           columns: torch.Tensor) -> StripScores:
        mean, spread = smoothness(features)
        balance = (p_source.gather(1, columns[:, None])[:, 0] - 0.5).abs()
        return cls(columns.tolist(), monotonicity(p_target).mean().item(),
                   balance.mean().item(), mean.mean().item(), spread.mean().item())
