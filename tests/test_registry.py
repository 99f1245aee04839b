"""The registries of choices: each axis is one table, and the CLI's help, its validation and the code that builds
a run agree with it."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mnistctl.cli import app
from mnistctl.config import ARCHS, RANGES, TrainConfig
from mnistctl.errors import UsageError
from mnistctl.models import ARCHITECTURES
from mnistctl.registry import OPTIMIZERS, SCHEDULES, build_optimizer, schedule_factor
from mnistctl.train import make_optimizer

runner = CliRunner()


def test_every_architecture_has_a_recipe_and_a_network():
    assert list(ARCHS) == list(ARCHITECTURES)


@pytest.mark.parametrize("name", OPTIMIZERS.names)
def test_every_optimizer_builds_at_its_default_rate(name):
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(optimizer=name).resolved()
    built = make_optimizer(cfg, model)
    assert built.param_groups[0]["lr"] == cfg.lr
    assert type(build_optimizer(name, model.parameters(), 0.1, 0.9)) is type(built)


@pytest.mark.parametrize("name", SCHEDULES.names)
def test_every_schedule_starts_positive_and_never_exceeds_the_peak(name):
    factor = schedule_factor(name, 100)
    values = [factor(step) for step in range(101)]
    assert values[0] > 0 and all(0 <= v <= 1 for v in values)


def test_help_lists_each_axis_from_its_registry():
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout
    compare = runner.invoke(app, ["compare-optimizers", "--help"], env={"COLUMNS": "200"}).stdout
    assert ARCHS.listed() in train and OPTIMIZERS.listed() in train and SCHEDULES.listed() in train
    assert SCHEDULES.listed() in compare and ", ".join(OPTIMIZERS) in compare


@pytest.mark.parametrize("field", [name for name, r in RANGES.items() if r.high is not None])
def test_a_value_past_a_declared_range_is_refused_by_the_cli_and_by_validation(field):
    allowed = RANGES[field]
    too_high = allowed.high + 1
    with pytest.raises(UsageError, match=f"{allowed.option} must be between"):
        TrainConfig(**{field: too_high}).validate()
    if field != "seed":  # the CLI declares the others' ranges to Click; --seed is checked by validate() alone
        result = runner.invoke(app, ["train", allowed.option, str(too_high)])
        assert result.exit_code == 2 and allowed.option in result.stderr


def test_an_unknown_name_on_any_axis_is_refused_with_the_names():
    for axis in (ARCHS, OPTIMIZERS, SCHEDULES):
        with pytest.raises(UsageError, match=f"unknown {axis.what} 'x'") as caught:
            axis.check("x")
        assert ", ".join(axis) in caught.value.hint
