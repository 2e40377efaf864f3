"""The samplers, each a pure function in its own module, and the plan that fits one to a run's
schedule and an evaluation budget.

    als   annealed Langevin (NCSNv2), the default and the reference's sampler   langevin.py
    heun  probability-flow ODE, Heun steps on a Karras grid (EDM)                 heun.py
    pc    reverse-diffusion predictor + Langevin corrector (Song et al. 2021)     pc.py
    cas   consistent annealed sampling (Jolicoeur-Martineau et al. 2021)          cas.py

Each sampler walks its own grid between the run's sigma_1 and sigma_L, snapped to the levels the
network was trained on (`plan.py` says why: the U-Net's Fourier features of log sigma do not
interpolate between them). CUDA graphs for the samplers are in `graphs.py`. The names and
defaults live here, torch-free (the CLI lists them without loading torch); `plan.py` fits a
sampler to a run.

`steps` is a budget of network evaluations per image: each sampler takes the largest grid that
fits in it (als keeps the run's T steps per level and re-chooses eps for its coarser levels by
Technique 4).
"""

SAMPLERS = ("als", "heun", "pc", "cas")
DEFAULT_STEPS = {"heun": 35, "pc": 200, "cas": 200}  # evaluations; als: the run's own schedule
SAMPLER_HELP = ("als: annealed Langevin, the run's schedule (NCSNv2); heun: probability-flow ODE "
                "on a Karras grid, starts at the data's mean + sigma_1 z, since an ODE cannot mix "
                "away from a wrong start (35 evaluations by default); pc: predictor-corrector "
                "(200); cas: consistent annealed sampling (200)")
