"""The public API: every name resolves, and it is the engine's own object."""

import subprocess
import sys

import lrscale
from lrscale.engine import loop


def test_every_public_name_resolves():
  for name in lrscale.__all__:
    assert getattr(lrscale, name) is not None, name
  assert lrscale.train is loop.train


def test_import_lrscale_loads_no_jax():
  code = "import sys, lrscale; assert 'jax' not in sys.modules, sorted(sys.modules)"
  subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# Programs whose flags are defined when the module is imported. Anything else
# must define its flags under ``if __name__ == "__main__"``: tests import
# helpers from experiments and scripts into one process, and absl refuses a
# flag name (``config``, ``workdir``) defined twice.
_FLAG_MODULES = {
  "lrscale/analyze.py",
  "lrscale/engine/launch.py",  # the multi-host flags every main shares
  "lrscale/train.py",
  "lrscale/lr_find/__main__.py",
  "lrscale/study/__main__.py",
  "lrscale/cbs/__main__.py",
  "scripts/bench_multihost.py",
}


def test_only_program_modules_define_flags_at_import():
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(__file__).resolve().parents[1]
  offenders = []
  for sub in ("lrscale", "experiments", "scripts"):
    for path in sorted((root / sub).rglob("*.py")):
      rel = path.relative_to(root).as_posix()
      for node in ast.parse(path.read_text()).body:  # module level only
        call = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
        func = getattr(call, "func", None)
        if isinstance(func, ast.Attribute) and func.attr.startswith("DEFINE"):
          if rel not in _FLAG_MODULES:
            offenders.append(f"{rel}:{node.lineno}")
  assert not offenders, offenders
