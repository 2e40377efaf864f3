"""How the reference NCSNv2 code names the RefineNet's parameters, and in which order it
registers them (the order of Adam's state), for each of its three classes.

The reference (ermongroup/ncsnv2, models/ncsnv2.py) has NCSNv2 (32 to 64 px), NCSNv2Deeper
(LSUN) and NCSNv2Deepest (FFHQ). Its modules: begin_conv, normalizer, end_conv; residual
stages res1..resK, each a list of two blocks {conv1, normalize2, conv2, shortcut, normalize1}
(a downsampling block's conv2 and shortcut are ConvMeanPool, whose convolution is `.conv`);
RefineBlocks refine1..refineK from the coarsest stage to the finest, each {adapt_convs,
output_convs, msf, crp} with residual conv units named "<block>_<stage>_conv". The deepest class
adds a stage res31 after res3, and refine31 between refine2 and refine3 in the forward pass
(registered after refine3). InstanceNorm++ holds alpha, gamma, beta. pegasus's RefineNet
(backbones/refinenet.py) is the same network under other names; this module maps them.
"""

from __future__ import annotations

import re

# Per class: the stages, finest first (pegasus's stage order), and the RefineBlocks from the
# coarsest stage to the finest (pegasus's refine order); then the order the reference registers
# its RefineBlocks in.
CLASSES = {
    "ncsnv2": (["res1", "res2", "res3", "res4"], ["refine1", "refine2", "refine3", "refine4"]),
    "deeper": (["res1", "res2", "res3", "res4", "res5"],
               ["refine1", "refine2", "refine3", "refine4", "refine5"]),
    "deepest": (["res1", "res2", "res3", "res31", "res4", "res5"],
                ["refine1", "refine2", "refine31", "refine3", "refine4", "refine5"]),
}
CLASS_NAMES = {"ncsnv2": "NCSNv2", "deeper": "NCSNv2Deeper", "deepest": "NCSNv2Deepest"}
REGISTERED_REFINES = {"ncsnv2": CLASSES["ncsnv2"][1], "deeper": CLASSES["deeper"][1],
                      "deepest": ["refine1", "refine2", "refine3", "refine31", "refine4", "refine5"]}

_TOP = {"begin": "begin_conv", "norm": "normalizer", "end": "end_conv"}
_BLOCK_PARTS = {"norm1": "normalize1", "norm2": "normalize2", "conv1": "conv1", "conv2": "conv2",
                "shortcut": "shortcut"}


def reference_name(name: str, stages: str) -> str:
    """The reference's name (without DataParallel's "module.") of pegasus parameter `name`
    (a ScoreModel's, "backbone.…") in the class `stages` names."""
    res, refine = CLASSES[stages]
    parts = name.removeprefix("backbone.").split(".")
    if parts[0] in _TOP:
        return ".".join([_TOP[parts[0]], *parts[1:]])
    if parts[0] == "stages":  # stages.s.b.part[.0].param
        stage, block, part, rest = res[int(parts[1])], parts[2], _BLOCK_PARTS[parts[3]], parts[4:]
        if rest[0] == "0":  # ConvMeanPool: pegasus's Sequential(conv, pool), the reference's .conv
            rest = ["conv", *rest[1:]]
        return ".".join([stage, block, part, *rest])
    if parts[0] == "refine":  # refine.j.adapt.i.blocks.b.k.w | fuse.i.p | crp.convs.k.w | out.blocks.b.k.w
        block, kind, rest = refine[int(parts[1])], parts[2], parts[3:]
        if kind == "adapt":
            i, b, k, param = rest[0], int(rest[2]), int(rest[3]), rest[4]
            return f"{block}.adapt_convs.{i}.{b + 1}_{k + 1}_conv.{param}"
        if kind == "out":
            b, k, param = int(rest[1]), int(rest[2]), rest[3]
            return f"{block}.output_convs.{b + 1}_{k + 1}_conv.{param}"
        if kind == "fuse":
            return f"{block}.msf.convs.{rest[0]}.{rest[1]}"
        if kind == "crp":
            return f"{block}.crp.{'.'.join(rest)}"
    raise ValueError(f"no reference name for pegasus parameter {name!r}")


_PART_RANK = {"conv1": 0, "normalize2": 1, "conv2": 2, "shortcut": 3, "normalize1": 4,
              "adapt_convs": 0, "output_convs": 1, "msf": 2, "crp": 3}
_PARAM_RANK = {"weight": 0, "bias": 1, "alpha": 0, "gamma": 1, "beta": 2}


def registration_key(name: str, stages: str) -> tuple:
    """Where reference parameter `name` comes in the reference's own registration order (its
    named_parameters, and so the indices of its Adam state)."""
    res, _ = CLASSES[stages]
    parts = name.split(".")
    top = ["begin_conv", "normalizer", "end_conv"]
    if parts[0] in top:
        section = top.index(parts[0])
    elif parts[0] in res:
        section = 3 + res.index(parts[0])
    else:
        section = 3 + len(res) + REGISTERED_REFINES[stages].index(parts[0])
    inner = []
    for piece in parts[1:]:
        if piece in _PART_RANK:
            inner.append(_PART_RANK[piece])
        elif piece in _PARAM_RANK:
            inner.append(_PARAM_RANK[piece])
        elif re.fullmatch(r"\d+", piece):
            inner.append(int(piece))
        elif m := re.fullmatch(r"(\d+)_(\d+)_conv", piece):
            inner.extend([int(m.group(1)), int(m.group(2))])
        # "conv" (ConvMeanPool's), "convs": one module each, nothing to order
    return (section, *inner)


def stages_of_keys(keys) -> str:
    """The class a reference state dict's names belong to."""
    names = {k.removeprefix("module.").split(".")[0] for k in keys}
    if "res31" in names:
        return "deepest"
    return "deeper" if "res5" in names else "ncsnv2"
