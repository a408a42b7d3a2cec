"""Local critical batch size over training, by branching (Merrill et al. 2025).

From checkpoints of a reference run at batch B (steps t_1 < t_2 < ...), train
branches at k x B for a fixed number of examples, with the lr of the reference
at t scaled by a rule (sqrt for Adam-type, linear for SGD-type by default), and
call CBS(t) the largest k x B whose loss after the branch is within a
tolerance of the k = 1 branch's. Merrill et al. ("Critical Batch Size
Revisited", 2025) found CBS rising from ~0 and plateauing during OLMo
pre-training, far above the gradient noise scale B_simple; the report plots
both. ``python -m lrscale.cbs --config=configs/cbs/digits_mlp.py --workdir=...``.
"""
