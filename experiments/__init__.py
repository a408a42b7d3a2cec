"""Reproductions of published large-batch results, one module per paper.

Each module is an absl app, ``python -m experiments.<name> --mode=analogue
--workdir=DIR`` (``--mode=full`` for the paper's own setting, ``--smoke`` for
the seconds-long variant the tests run). Shared machinery (running a set of
runs or a study, tables, reports, figures) lives in ``experiments.common``.
See docs/reproductions.md for the commands, runtimes and results.
"""
