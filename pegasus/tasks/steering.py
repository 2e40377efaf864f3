"""What the verbs that steer their chains by a classifier share: the run's guide (or judge) on
its device, checked to classify the run's classes, the bound on a guidance weight, and the
classes a request names. The guides themselves are model/guides.py's."""

from __future__ import annotations

import math

from pegasus.errors import FieldError, UserError
from pegasus.model.classifier import Classifier
from pegasus.run.classifiers import load_classifier

# The largest guidance weight: W multiplies grad log p(class | x, sigma), and far below this the
# guide already outweighs the score at every level (bench/README.md, "Blend reports and --k
# auto", goes to W = 30); beyond it the chains only leave the image range (an all-black
# picture at W = 1e30).
MAX_GUIDANCE = 1000.0


def check_guidance(weight: float) -> None:
    if not (math.isfinite(weight) and 0 <= weight <= MAX_GUIDANCE):
        raise FieldError("guidance", f"must be a number from 0 to {MAX_GUIDANCE:g}, got {weight}")


def check_classes(classes: list[str], *names: str | None) -> None:
    """Each class named is one of the run's, and no two are the same."""
    for name in names:
        if name is not None and name not in classes:
            raise UserError(f"unknown class {name!r} for this run; its classes: {', '.join(classes)}")
    given = [name for name in names if name is not None]
    if len(set(given)) < len(given):
        raise UserError(f"the two classes asked for are both {given[0]!r}; pick two different "
                        f"classes")


def classifier(trained, kind: str) -> Classifier:
    """The run's guide or judge on its device, checked to classify the run's classes."""
    return load_classifier(trained.run_dir.path, kind, trained.device, classes=trained.classes)
