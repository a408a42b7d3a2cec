"""The training engine that every tool runs on: set-up, step, loop, parallelism, outputs.

- ``parallel``: launch, the device mesh, global arrays from local shards.
- ``step``: the pure jitted train step, the on-device segment loop, evaluation.
- ``setup``: ``RunSetup``, what a run builds before its first step.
- ``loop``: ``RunLoop`` (host bookkeeping) and ``train``.
- ``programs``: which runs share one compiled program.
- ``checkpoint``: Orbax checkpoints; ``outputs``: metrics, TensorBoard, progress.
"""
