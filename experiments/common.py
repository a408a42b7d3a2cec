"""Shared machinery of the paper reproductions in ``experiments/``.

Every experiment module builds a list of run configs (or one study config),
hands it to this module to train, reads the results back, and writes a report
in the paper's form. What they share lives here, once:

* **configs**: the offline analogue's base run (:func:`digits_base`), the
  repository's full-scale config files (:func:`load_repo_config`), and the
  validation of full-scale configs before the missing-dataset error
  (:func:`check_full_runs`, :func:`check_full_study`);
* **running**: a named set of runs trained with one compiled step per group of
  runs that differ only in lr and seed (:func:`run_all`), and a study
  (:func:`run_study`); both skip what is already finished, so an interrupted
  experiment resumes where it stopped;
* **reading**: per-run curves against epochs (:func:`curve`), final error;
* **writing**: markdown tables, the report, ``results.json`` and figures kept
  small enough to commit (:func:`save_figure`);
* **launching**: the absl flags every experiment takes (:func:`launch`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lrscale import config as config_lib
from lrscale.analysis import store_reader
from lrscale.data import registry
from lrscale.engine.programs import program_key

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("analogue", "full")
MAX_FIGURE_BYTES = 200_000
DIGITS_NUM_TRAIN = 1437  # the offline digits' fixed train split (1797 - 360 test)

# (train, eval, classes, image shape) of the papers' datasets (public facts), so a
# full-scale config can be validated and resolved here, where the data is absent.
PAPER_DATASETS: Mapping[str, tuple[int, int, int, tuple[int, ...]]] = {
  "mnist": (60000, 10000, 10, (28, 28, 1)),
  "fashion_mnist": (60000, 10000, 10, (28, 28, 1)),
  "cifar10": (50000, 10000, 10, (32, 32, 3)),
  "imagenet2012": (1281167, 50000, 1000, (224, 224, 3)),
}


# ----------------------------------------------------------------------------- configs


def load_repo_config(relpath: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of a config file of this repository, e.g. ``configs/mnist_cnn.py``."""
  return config_lib.load_config_file(os.path.join(REPO_ROOT, relpath), arg)


def digits_base(*, smoke: bool = False) -> ml_collections.ConfigDict:
  """The analogue's base run: the MLP (64-128-128-10) on the offline digits, one device.

  Args:
    smoke: the test variant: a narrower MLP and no persistent compilation cache.

  Returns:
    A run config the experiments change per run (batch size, lr, schedule, ...).
  """
  c = config_lib.base_config()
  c.dataset.name = "digits"
  c.model.name = "mlp"
  c.model.hidden = (32,) if smoke else (128, 128)
  c.parallel.num_devices = 1  # small model: one device; nothing here assumes a CPU
  c.tensorboard = False
  c.checkpoint_every = "1000 epochs"  # short runs: only the final checkpoint
  c.checkpoint_keep = 1
  c.log_every = "1 steps"
  c.sync_every = "500 steps"
  if smoke:
    c.compilation_cache = ""
  return c


def set_fields(cfg: ml_collections.ConfigDict, **fields: Any) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with dotted fields set, e.g. ``**{"warmup.length": "5 epochs"}``."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  for key, value in fields.items():
    config_lib.set_field(out, key, value)
  return out


def stand_in_meta(dataset_cfg: Any) -> registry.DatasetMeta:
  """Size and shape of a paper dataset without reading it (for validating full configs)."""
  name = dataset_cfg.name
  if name not in PAPER_DATASETS:
    return registry.check_dataset(dataset_cfg)  # offline datasets need no stand-in
  num_train, num_eval, classes, shape = PAPER_DATASETS[name]
  return registry.DatasetMeta(
    name=name,
    num_train=num_train,
    num_eval=num_eval,
    num_classes=classes,
    input_shape=shape,
    streamed=name in registry.TFDS_STREAMED,
  )


def check_full_runs(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Validates and resolves every full-scale config, then checks its dataset is prepared.

  Every field, length and scaling rule is checked first (against the dataset's
  known size), so a typo surfaces even where the data is missing; then the
  dataset check raises ``DatasetNotFoundError`` with the ``tfds build`` command.
  """
  for cfg in configs:
    config_lib.resolve(cfg, dataset_meta=stand_in_meta(cfg.dataset))
  for name in sorted({cfg.dataset.name for cfg in configs}):
    registry.check_dataset(next(c for c in configs if c.dataset.name == name).dataset)


def check_full_study(study: ml_collections.ConfigDict) -> None:
  """:func:`check_full_runs` for every distinct trial config of a study."""
  from lrscale.study import space  # pylint: disable=g-import-not-at-top

  check_full_runs([space.trial_config(study, t) for t in space.enumerate_trials(study)])


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of an experiment.

  Attributes:
    name: directory name under ``<workdir>/runs/``; unique within the experiment.
    config: the run config.
    tags: what the report groups by (method, batch size, seed, ...).
  """

  name: str
  config: ml_collections.ConfigDict
  tags: Mapping[str, Any]


def run_dir(workdir: str, name: str) -> str:
  """The directory of run ``name`` of an experiment."""
  return os.path.join(workdir, "runs", name)


def _finished_summary(path: str) -> dict[str, Any] | None:
  """The summary of a finished (complete or diverged) run, else None."""
  summary = store_reader.read_json(os.path.join(path, "summary.json"))
  if summary and summary.get("status") in ("complete", "diverged"):
    return summary
  return None


@dataclasses.dataclass(frozen=True)
class Done:
  """What :func:`run_study` did.

  Attributes:
    value: the analysis dict.
    total: trials in the study.
    reused: of those, trials an earlier invocation had already finished.
  """

  value: Any
  total: int
  reused: int


class Summaries(dict):
  """``{run name: summary}`` from :func:`run_all`, with ``total`` and ``reused`` counts."""

  total: int = 0
  reused: int = 0


def run_all(runs: Sequence[Run], workdir: str, *, log: Callable[[str], None] = print) -> Summaries:
  """Trains every run (skipping finished ones) and returns ``{name: summary}``.

  Every config is resolved before the first step, so a bad one fails before
  any compute. Runs that differ only in lr, seed or scaling rule share one
  compiled ``RunSetup`` (lrscale.train), which is what makes hundreds of short
  runs affordable on a CPU.
  """
  from lrscale.engine import loop as train_lib  # pylint: disable=g-import-not-at-top

  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(
      f"run names must be unique; duplicates: {sorted({n for n in names if names.count(n) > 1})}"
    )
  plans = [config_lib.resolve(r.config) for r in runs]
  summaries = Summaries()
  setups: dict[str, Any] = {}
  data: dict[str, registry.InMemoryData] = {}
  t0 = time.perf_counter()
  reused = 0
  for i, (run, plan) in enumerate(zip(runs, plans)):
    path = run_dir(workdir, run.name)
    done = _finished_summary(path)
    reused += done is not None
    if done is None:
      dkey = json.dumps(plan.config.dataset.to_dict(), sort_keys=True)
      if dkey not in data:
        data[dkey] = registry.load_in_memory(plan.config.dataset)
      key = program_key(plan)
      if key not in setups:
        setups[key] = train_lib.RunSetup(plan, data[dkey])
      done = train_lib.train(run.config, path, plan=plan, setup=setups[key], data=data[dkey])
    summaries[run.name] = done
    log(
      f"[{i + 1}/{len(runs)}] {run.name}: {done['status']}, {done['steps']} steps, "
      f"eval_accuracy {done['final'].get('eval_accuracy', float('nan')):.4f} "
      f"({time.perf_counter() - t0:.0f} s so far)"
    )
  summaries.total, summaries.reused = len(runs), reused
  return summaries


def run_study(study: ml_collections.ConfigDict, workdir: str) -> Done:
  """Runs a study (resuming it) and analyses it; ``Done.value`` is the analysis dict.

  Raises:
    ValueError: ``workdir`` holds trials this study does not have (another
      study's, or an older grid): analysing them together would mix the two.
  """
  from lrscale.analysis.run import analyze  # pylint: disable=g-import-not-at-top
  from lrscale.study import runner, space  # pylint: disable=g-import-not-at-top

  trials_dir = os.path.join(workdir, "trials")
  present = set(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else set()
  foreign = present - {t.id for t in space.enumerate_trials(study)}
  if foreign:
    raise ValueError(
      f"{workdir} holds {len(foreign)} trials that study {study.name!r} does "
      f"not have (e.g. {sorted(foreign)[0]}); use another directory, or delete "
      "it to start over."
    )
  counts = runner.run_study(study, workdir)
  total = sum(counts.values())
  return Done(value=analyze(workdir), total=total, reused=counts.get("skipped", 0))


# ----------------------------------------------------------------------------- reading


def read_rows(path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(train rows, eval rows) of a run directory's metrics.jsonl, each sorted by step."""
  return store_reader.split_rows(store_reader.read_jsonl(os.path.join(path, "metrics.jsonl")))


def curve(
  rows: Sequence[Mapping[str, Any]], key: str, *, num_train: int = DIGITS_NUM_TRAIN
) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, values) of ``key`` over the rows that carry a finite value of it."""
  pts = [
    (float(r["examples_seen"]) / num_train, float(r[key]))
    for r in rows
    if store_reader.as_float(r.get(key)) is not None and math.isfinite(float(r[key]))
  ]
  if not pts:
    return np.zeros(0), np.zeros(0)
  x, y = zip(*pts)
  return np.asarray(x), np.asarray(y)


def binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Mean of ``y`` in each bin ``[edges[i], edges[i+1])`` of ``x`` (NaN where empty)."""
  out = np.full(len(edges) - 1, np.nan)
  idx = np.digitize(x, edges) - 1
  for i in range(len(out)):
    sel = idx == i
    if sel.any():
      out[i] = float(np.mean(y[sel]))
  return out


def mean_curve(
  paths: Sequence[str],
  key: str,
  *,
  edges: np.ndarray | None = None,
  num_train: int = DIGITS_NUM_TRAIN,
) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, mean over runs of ``key``) for runs that differ only in their seed.

  Train keys are averaged within epoch bins ``edges`` first (per-step minibatch
  losses are noisy); without ``edges`` the rows are aligned by position, which
  is exact for eval rows because every seed evaluates at the same steps.
  """
  if not paths:
    return np.zeros(0), np.zeros(0)
  train = not key.startswith("eval_")
  series = [curve(read_rows(p)[0 if train else 1], key, num_train=num_train) for p in paths]
  if edges is not None:
    ys = np.stack([binned_mean(x, y, edges) for x, y in series])
    ok = np.isfinite(ys).all(axis=0)
    return 0.5 * (edges[1:] + edges[:-1])[ok], ys[:, ok].mean(axis=0)
  n = min(len(x) for x, _ in series)
  return series[0][0][:n], np.mean([y[:n] for _, y in series], axis=0)


def error_pct(summary: Mapping[str, Any], *, num_classes: int = 10) -> float:
  """Final eval error in percent; a diverged run counts as chance (its training failed)."""
  if summary["status"] == "diverged":
    return 100.0 * (1.0 - 1.0 / num_classes)
  return 100.0 * (1.0 - float(summary["final"]["eval_accuracy"]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  v = np.asarray(values, dtype=float)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ----------------------------------------------------------------------------- writing


def fmt(value: Any, spec: str = ".4g") -> str:
  """A table cell: ``-`` for None/NaN, floats by ``spec``."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if isinstance(value, (float, np.floating)):
    return format(float(value), spec)
  return str(value)


def fmt_mean_std(values: Sequence[float], spec: str = ".2f") -> str:
  """``mean ± std`` of ``values`` (``mean`` alone for one value)."""
  m, s = mean_std(values)
  return fmt(m, spec) if len(values) < 2 else f"{fmt(m, spec)} ± {fmt(s, spec)}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub markdown table; cells go through :func:`fmt`."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def verdict(held: bool, finding: str, evidence: str) -> str:
  """One honest line: whether the paper's qualitative finding held here, and why."""
  return f"**{'Held' if held else 'Did not hold'}**: {finding} {evidence}"


def format_duration(seconds: float) -> str:
  """``42 s`` or ``6.1 min``."""
  return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def runtime_line(seconds: float, done: Done | Summaries | None = None, *, smoke: bool) -> str:
  """Where and how long: the runtime is measured, never typed in."""
  import jax  # pylint: disable=g-import-not-at-top

  dev = jax.devices()[0]
  kind = dev.device_kind if dev.platform != "cpu" else f"CPU ({os.cpu_count()} cores visible)"
  line = (
    f"Runtime: {format_duration(seconds)} of wall time on {kind}"
    f"{' (smoke variant)' if smoke else ''}"
  )
  if done is None:
    return line + "."
  if done.reused == done.total:
    return line + (
      f": analysis only, all {done.total} runs had been finished by an earlier "
      "invocation and were not rerun."
    )
  if done.reused:
    return line + (
      f", training included, but {done.reused} of its {done.total} runs had "
      "been finished by an earlier invocation and were not rerun."
    )
  return line + f", training all {done.total} runs included."


def write_report(outdir: str, title: str, sections: Sequence[str]) -> str:
  """Writes ``report.md`` (sections separated by blank lines); returns its path."""
  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections if s) + "\n")
  return path


def write_results(outdir: str, results: Mapping[str, Any]) -> str:
  """Writes ``results.json`` (strict JSON: NaN/inf become null); returns its path."""
  from lrscale.analysis.report import to_jsonable  # pylint: disable=g-import-not-at-top

  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, "results.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(to_jsonable(results), f, indent=2, allow_nan=False, sort_keys=True)
    f.write("\n")
  return path


def figure(
  nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.4
) -> tuple[Figure, np.ndarray]:
  """A figure on the Agg canvas (no pyplot state) and its axes as a 2-D array."""
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig, np.atleast_2d(np.asarray(fig.subplots(nrows, ncols), dtype=object)).reshape(
    nrows, ncols
  )


def save_figure(fig: Figure, path: str, *, max_bytes: int = MAX_FIGURE_BYTES) -> str:
  """Saves a PNG, lowering the resolution until it is under ``max_bytes``; returns its name.

  Raises:
    ValueError: not even 20 dpi fits (simplify the figure).
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  dpi = 100.0
  while dpi >= 20:
    fig.savefig(path, dpi=dpi)
    if os.path.getsize(path) <= max_bytes:
      return os.path.basename(path)
    dpi *= 0.85
  raise ValueError(f"{path}: {os.path.getsize(path)} bytes even at 20 dpi, over {max_bytes}.")


def batch_axis(ax: Axes, batch_sizes: Sequence[int]) -> None:
  """Log-2 batch-size x axis with the batch sizes as tick labels."""
  ax.set_xscale("log", base=2)
  ax.set_xticks(list(batch_sizes), [str(b) for b in batch_sizes])
  ax.set_xlabel("batch size B")


def batch_colors(batch_sizes: Sequence[int]) -> dict[int, Any]:
  """One colour per batch size, dark (small B) to light (large B)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top

  cmap = colormaps["viridis"]
  n = max(1, len(batch_sizes) - 1)
  return {b: cmap(0.9 * i / n) for i, b in enumerate(sorted(batch_sizes))}


# ----------------------------------------------------------------------------- launching


def launch(run_fn: Callable[..., Mapping[str, Any]]) -> None:
  """The absl main of an experiment module; call it under ``if __name__ == "__main__":``.

  Flags (defined here, so importing an experiment defines none): ``--mode``
  (analogue | full), ``--workdir`` (runs), ``--outdir`` (report and figures;
  default the workdir), ``--smoke`` (the seconds-long test variant). Calls
  ``run_fn(mode=, workdir=, outdir=, smoke=)``.
  """
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

  flags.DEFINE_enum(
    "mode",
    "analogue",
    MODES,
    "analogue: the small offline analogue; "
    "full: the paper's setting (needs its dataset and accelerators).",
  )
  flags.DEFINE_string("workdir", None, "Directory for the runs (resumed if it exists).")
  flags.DEFINE_string(
    "outdir", "", "Directory for report.md, results.json and figures ('' = the workdir)."
  )
  flags.DEFINE_bool("smoke", False, "A tiny variant (seconds of training), for tests.")
  flags.mark_flag_as_required("workdir")

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    result = run_fn(mode=f.mode, workdir=f.workdir, outdir=f.outdir or None, smoke=f.smoke)
    logging.info("Report: %s", result.get("report"))
    print(f"Report written to {result.get('report')}")

  app.run(main)
