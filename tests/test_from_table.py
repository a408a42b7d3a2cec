"""``lrscale.analyze --from_table``: published steps-to-target tables (Zhang et al. 2024)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize

from lrscale.analysis import table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZHANG = os.path.join(REPO, "tests", "data", "zhang2024_steps_to_target.csv")


def _independent_fit(b: np.ndarray, s: np.ndarray) -> tuple[float, float]:
  """S = S_min (1 + B_crit / B) by scipy least squares on log S, from a crude start."""
  res = optimize.least_squares(
    lambda p: p[0] + np.log1p(np.exp(p[1]) / b) - np.log(s),
    x0=[np.log(s.min()), np.log(np.median(b))],
    method="lm",
  )
  return float(np.exp(res.x[0])), float(np.exp(res.x[1]))


@pytest.fixture(scope="module")
def zhang(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("zhang"))
  return out, table.analyze_table(ZHANG, out)


def test_b_crit_per_model_matches_independent_fit(zhang):
  _, analysis = zhang
  raw = np.genfromtxt(ZHANG, delimiter=",", names=True, dtype=None, encoding="utf-8")
  models = list(dict.fromkeys(raw["model"]))
  assert list(analysis["groups"]) == models == ["85M", "151M", "302M", "604M", "1.2B"]
  b_crits = []
  for name in models:
    rows = raw[raw["model"] == name]
    s_min, b_crit = _independent_fit(
      rows["batch_size_sequences"].astype(float), rows["steps_to_target"].astype(float)
    )
    g = analysis["groups"][name]
    assert g["b_crit"] == pytest.approx(b_crit, rel=0.10), name
    assert g["s_min"] == pytest.approx(s_min, rel=0.10), name
    lo, hi = g["ci"]["b_crit"]
    assert lo < g["b_crit"] < hi
    b_crits.append(g["b_crit"])
  # The published finding: B_crit grows with model size (data README: ~2.2k -> ~11k sequences).
  assert np.all(np.diff(b_crits) > 0)
  assert 1.8e3 < b_crits[0] < 2.6e3 and 9e3 < b_crits[-1] < 1.3e4


def test_writes_outputs(zhang):
  out, analysis = zhang
  for name in ("analysis.json", "fits.csv", "report.md", "steps_to_result.png", "b_crit.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "analysis.json")) as f:
    assert json.load(f)["groups"]["1.2B"]["b_crit"] == pytest.approx(
      analysis["groups"]["1.2B"]["b_crit"]
    )
  assert analysis["groups"]["85M"]["model_size"] == pytest.approx(8.5e7)
  text = open(os.path.join(out, "report.md")).read()
  assert "| 1.2B | 9 | 2.736 |" in text and "](b_crit.png)" in text


@pytest.mark.parametrize(
  "content,message",
  [
    (None, "no such file"),
    ("model,batch_size,steps\nA,1,2\n", "'steps_to_target'"),
    ("name,batch_size,steps_to_target\nA,1,2\n", "no group column 'model'"),
    ("model,bs,steps_to_target\nA,1,2\n", "no batch-size column"),
    ("model,batch_size,steps_to_target\nA,8,abc\n", "line 2: column 'steps_to_target' = 'abc'"),
  ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, content, message):
  path = str(tmp_path / "t.csv")
  if content is not None:
    with open(path, "w") as f:
      f.write(content)
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    table.read_table(path)
  proc = subprocess.run(
    [sys.executable, "-m", "lrscale.analyze", f"--from_table={path}", f"--workdir={tmp_path}/w"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], proc.stderr
  assert not os.path.exists(f"{tmp_path}/w")  # nothing computed or written
