"""Training objectives: the loss a run trains on, one module each, named by the config's
`objective.name` and registered through the plugin hook `register_objectives` (hookspecs.py),
as the built-ins are (builtin.py). The trainer calls an objective's loss without knowing which
it is; each owns its sigma draw, its stage schedule, its parameterisation and whether its
held-out loss means anything.

    dsm   denoising score matching (NCSNv2; dsm.py), on the run's levels or a continuum of sigmas
    ect   easy consistency tuning (ECT; ect.py) of a trained run into a consistency function

Adding an objective is one module with its loss and one registration (docs/plugins.md).
"""
