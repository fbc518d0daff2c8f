import json
import random

import numpy as np
import torch

from pipeline import checkpoint
from pipeline.metrics import METRICS, MetricsLogger, plot_losses, read_metrics


def test_rng_state_survives_json():
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = json.loads(json.dumps(checkpoint.rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def _complete(root, step):
    folder = root / checkpoint.step_name(step)
    folder.mkdir(parents=True)
    (folder / checkpoint.TRAINER).write_text(json.dumps({"step": step}))
    return folder


def test_latest_skips_what_a_crash_left_half_written(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    _complete(tmp_path, 10)
    twenty = _complete(tmp_path, 20)
    (tmp_path / "step-00000030.tmp").mkdir()  # killed mid-save: never renamed
    (tmp_path / "step-00000040").mkdir()  # renamed but incomplete (no trainer.json)
    assert checkpoint.latest(tmp_path) == twenty  # no `latest` file: the newest complete one
    (tmp_path / checkpoint.LATEST).write_text("step-00000010")
    assert checkpoint.latest(tmp_path).name == "step-00000010"  # `latest` is the authority
    (tmp_path / checkpoint.LATEST).write_text("step-00000040")
    assert checkpoint.latest(tmp_path) == twenty  # ... unless it names an incomplete folder


def test_metrics_are_cut_back_to_the_resumed_step_and_plotted(tmp_path):
    log = MetricsLogger(tmp_path, {}, "disabled", "p", None, "run", "stage1", 0, None)
    for step in range(1, 6):
        log.log({"step": step, "loss": 5.0 - step, "loss/caption": 5.0 - step, "lr/vision": 1e-4})
    log.close()
    assert (tmp_path / "loss.png").stat().st_size > 10_000
    resumed = MetricsLogger(tmp_path, {}, "disabled", "p", None, "run", "stage1", 3, None)
    resumed.log({"step": 4, "loss": 0.5})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / METRICS)] == [
        (1, 4.0),
        (2, 3.0),
        (3, 2.0),
        (4, 0.5),
    ]
    assert plot_losses(tmp_path / "none.jsonl", tmp_path / "x.png") is None
