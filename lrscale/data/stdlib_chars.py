"""A character-level language-modelling corpus that ships with Python: the stdlib sources.

``stdlib_chars`` is the text of the top-level ``*.py`` modules of the Python
standard library installed with the interpreter (``sysconfig``'s ``stdlib``
directory; 168 files, 4.7 MB for CPython 3.11.7), read as bytes, so the
vocabulary is the 256 byte values and no tokenizer is needed. It needs no
network, but its text depends on the Python version: the sha256 of the corpus
is recorded as ``DatasetMeta.fingerprint`` (config.json, resolved section), so
runs on different Pythons are visibly different data.

Documents are files. A file goes to validation when the first byte of the
sha256 of its name is below 26 (~10%), so its split depends on its name only,
never on which other files exist. Each split is the concatenation of its files
in sorted order, separated by a NUL byte (which Python sources never contain),
cut into examples of ``context + 1`` bytes that overlap by one: example i is
bytes ``[i * context, (i + 1) * context]``, its input the first ``context`` and
its target the last ``context``, so every byte after the first is predicted
exactly once per epoch.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import sys
import sysconfig

import numpy as np

NAMES = ("stdlib_chars",)
VOCAB_SIZE = 256  # bytes
SEPARATOR = 0  # NUL between documents
_VAL_THRESHOLD = 26  # of 256: ~10% of files to validation


def corpus_files() -> list[str]:
  """The top-level standard-library modules, sorted by name."""
  return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


def is_validation(path: str) -> bool:
  """Whether a document belongs to the validation split (a function of its name only)."""
  return hashlib.sha256(os.path.basename(path).encode()).digest()[0] < _VAL_THRESHOLD


@functools.lru_cache(maxsize=2)
def corpus() -> tuple[np.ndarray, np.ndarray, str]:
  """(train bytes, validation bytes, sha256 of the corpus) as uint8 arrays.

  The hash covers every file's name and contents in order, so any change to
  the installed standard library changes it.
  """
  files = corpus_files()
  if not files:
    raise ValueError(
      "config.dataset.name='stdlib_chars': no *.py files in the standard library directory "
      f"{sysconfig.get_paths()['stdlib']!r}; this Python ships without sources."
    )
  digest = hashlib.sha256()
  parts: dict[bool, list[bytes]] = {False: [], True: []}
  for path in files:
    with open(path, "rb") as f:
      text = f.read()
    digest.update(os.path.basename(path).encode() + b"\0" + text + b"\0")
    parts[is_validation(path)].append(text)
  sep = bytes([SEPARATOR])
  train, val = (np.frombuffer(sep.join(parts[v]), np.uint8) for v in (False, True))
  return train, val, digest.hexdigest()


def windows(stream: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
  """Inputs and targets int32 [N, context] from a token stream (targets = inputs shifted by 1).

  N = (len(stream) - 1) // context; window i covers tokens
  ``[i * context, (i + 1) * context]`` inclusive.
  """
  n = (len(stream) - 1) // context
  idx = np.arange(n)[:, None] * context + np.arange(context + 1)[None, :]
  seqs = stream[idx].astype(np.int32)
  return seqs[:, :-1], seqs[:, 1:]


def _check_context(context: int) -> int:
  if not isinstance(context, int) or isinstance(context, bool) or context < 2:
    raise ValueError(
      f"config.dataset.context={context!r} must be an integer >= 2 (tokens per example)."
    )
  return context


def meta(dataset_cfg):
  """DatasetMeta of ``stdlib_chars`` at ``config.dataset.context`` (reads the corpus: ~50 ms)."""
  from lrscale.data.registry import DatasetMeta  # pylint: disable=g-import-not-at-top

  context = _check_context(dataset_cfg.context)
  train, val, sha = corpus()
  num_eval = (len(val) - 1) // context
  if dataset_cfg.eval_examples > 0:
    num_eval = min(num_eval, dataset_cfg.eval_examples)
  return DatasetMeta(
    name=dataset_cfg.name,
    num_train=(len(train) - 1) // context,
    num_eval=num_eval,
    num_classes=VOCAB_SIZE,
    input_shape=(context,),
    streamed=False,
    task="language_modelling",
    tokens_per_example=context,
    fingerprint=f"sha256:{sha} (Python {sys.version.split()[0]}, {len(corpus_files())} files)",
  )


def load(dataset_cfg):
  """``InMemoryData`` of int32 token windows [N, context] (inputs and shifted targets)."""
  from lrscale.data.registry import InMemoryData  # pylint: disable=g-import-not-at-top

  context = _check_context(dataset_cfg.context)
  train, val, _ = corpus()
  tx, ty = windows(train, context)
  ex, ey = windows(val, context)
  if dataset_cfg.eval_examples > 0:
    ex, ey = ex[: dataset_cfg.eval_examples], ey[: dataset_cfg.eval_examples]
  return InMemoryData(
    name=dataset_cfg.name, train_x=tx, train_y=ty, eval_x=ex, eval_y=ey, num_classes=VOCAB_SIZE
  )
