"""The consistency sampler's sigmas searched for a tuned run (tasks/sigma_search.py), kept in
the run folder (RunDir.searched_sigmas) and read by TrainedRun.plan: for each number of
evaluations searched, the sigmas below sigma_1 and the figure they scored."""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from pegasus.atomic import atomic_write
from pegasus.errors import UserError, first_line


@dataclass(frozen=True)
class Searched:
    sigmas: tuple[float, ...]  # below sigma_1, falling: one fewer than the evaluations
    kid: float  # held-out KID on the judge's features at these sigmas
    kid_std: float


@dataclass(frozen=True)
class SearchedSigmas:
    step: int  # the training step of the weights they were searched on
    num: int  # samples each candidate was scored on
    seed: int
    by_steps: dict[int, Searched]

    def write(self, path: Path) -> None:
        import tomli_w

        data = {"step": self.step, "num": self.num, "seed": self.seed,
                "steps": {str(n): {**asdict(found), "sigmas": list(found.sigmas)}
                          for n, found in sorted(self.by_steps.items())}}
        atomic_write(path, lambda f: tomli_w.dump(data, f))

    @classmethod
    def read(cls, path: Path) -> SearchedSigmas | None:
        """The file's sigmas, None where there is none; a damaged file is one line."""
        if not path.is_file():
            return None
        try:
            data = tomllib.loads(path.read_text())
            by_steps = {int(n): Searched(tuple(float(v) for v in found["sigmas"]),
                                         float(found["kid"]), float(found["kid_std"]))
                        for n, found in data["steps"].items()}
            searched = cls(int(data["step"]), int(data["num"]), int(data["seed"]), by_steps)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError,
                ValueError, AttributeError) as e:
            raise UserError(f"cannot read {path}: {first_line(e)}; delete it, or search the "
                            f"sigmas again with pegasus search-sigmas") from None
        for n, found in by_steps.items():
            values = found.sigmas
            if (len(values) != n - 1 or not all(math.isfinite(v) and v > 0 for v in values)
                    or any(b >= a for a, b in zip(values, values[1:], strict=False))):
                raise UserError(f"{path}: the sigmas for {n} evaluations must be {n - 1} falling "
                                f"positive numbers, got {list(values)}; delete it, or search "
                                f"again with pegasus search-sigmas")
        return searched
