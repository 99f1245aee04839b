"""compare-optimizers: one training run per optimizer, identical in everything but the optimizer.

Every run starts from the same initial weights (built once, copied into each run) and sees the same
batches in the same order with the same augmentation (both derive from the seed). Runs use `train.fit`,
the code behind `mnistctl train`. Each finished run is written to the results file at once, so an
interrupted comparison keeps what it finished and `--resume` skips it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mnistctl.checkpoint import weights_digest
from mnistctl.config import COMPARE_LRS, DEFAULT_LR, TrainConfig
from mnistctl.data.mnist import MnistData
from mnistctl.errors import Interrupted, MnistctlError, UsageError
from mnistctl.fsutil import check_writable, output_path, write_text_atomic
from mnistctl.models import get_architecture
from mnistctl.registry import OPTIMIZERS
from mnistctl.runtime import default_precision, device_kind, seed_everything
from mnistctl.train import EpochResult, fit

RESULTS_FORMAT = "mnistctl-compare"


def parse_optimizers(text: str) -> list[str]:
    """The optimizers named in ``--optimizers`` (comma-separated), each one known and named once."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--optimizers is empty", f"name one or more of: {', '.join(OPTIMIZERS.names)}")
    for name in names:
        if name not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {name!r} in --optimizers", f"use some of: {', '.join(OPTIMIZERS.names)}"
            )
    if len(set(names)) != len(names):
        raise UsageError("--optimizers names an optimizer twice", "name each one once")
    return names


def parse_lrs(text: str | None, optimizers: list[str]) -> dict[str, float]:
    """``1e-3`` (every optimizer) or ``adam=1e-3,sgd-nesterov=0.05``; unnamed ones get their default: the
    default comparison's rate (``config.COMPARE_LRS``), else the optimizer's own."""
    lrs = {name: COMPARE_LRS.get(name, DEFAULT_LR[name]) for name in optimizers}
    if not text:
        return lrs
    if "=" not in text:
        lrs = dict.fromkeys(optimizers, _positive(text, text))
        return lrs
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise UsageError(f"--lr: {part!r} is not NAME=NUMBER", "write e.g. --lr adam=1e-3,sgd-nesterov=0.05")
        if name not in optimizers:
            raise UsageError(
                f"--lr: {name!r} is not one of the optimizers being compared", f"compare: {', '.join(optimizers)}"
            )
        lrs[name] = _positive(value, part)
    return lrs


def _positive(value: str, part: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"--lr: {part!r} does not hold a number", "write e.g. --lr adam=1e-3") from None
    if not (math.isfinite(number) and number > 0):
        raise UsageError(f"--lr: {part!r} is not a positive number", "write e.g. --lr adam=1e-3")
    return number


@dataclass
class RunResult:
    optimizer: str
    lr: float
    history: list[EpochResult]
    seconds: float
    init_digest: str  # sha256 of the initial weights: equal across runs, by construction

    @property
    def final(self) -> EpochResult:
        return self.history[-1]

    @property
    def best_epoch(self) -> int:
        return max(self.history, key=lambda h: h.test_accuracy).epoch

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "seconds": self.seconds,
            "init_digest": self.init_digest,
            "final_train_loss": self.final.train_loss,
            "final_test_loss": self.final.test_loss,
            "test_accuracy": self.final.test_accuracy,
            "best_epoch": self.best_epoch,
            "history": [asdict(h) for h in self.history],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(d["optimizer"], d["lr"], [EpochResult(**h) for h in d["history"]], d["seconds"], d["init_digest"])


@dataclass
class Comparison:
    base: dict[str, Any]  # the shared training config
    runs: list[RunResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # optimizers taken from the results file (--resume)

    @property
    def winner(self) -> RunResult | None:
        return max(self.runs, key=lambda r: (r.final.test_accuracy, -r.final.test_loss), default=None)

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "format": RESULTS_FORMAT,
            "config": self.base,
            "winner": winner.optimizer if winner else None,
            "runs": [r.to_dict() for r in self.runs],
        }


def _load_previous(path: Path, base: dict[str, Any]) -> dict[str, RunResult]:
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise MnistctlError(
            f"cannot read the results file {path} ({exc})", "pass --force instead of --resume to start over"
        ) from exc
    if not isinstance(saved, dict) or saved.get("format") != RESULTS_FORMAT:
        raise MnistctlError(f"{path} is not a compare-optimizers results file", "pass another --results path")
    config = saved.get("config")
    if isinstance(config, dict):
        config = {"negatives": 0.0, **config}  # written before negatives existed: it had none
    if config != base:
        raise MnistctlError(
            f"{path} holds results of a different comparison (other epochs, data, seed or model)",
            "pass --force instead of --resume to start over, or another --results path",
        )
    try:
        return {r["optimizer"]: RunResult.from_dict(r) for r in saved.get("runs", [])}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MnistctlError(
            f"{path} is a damaged compare-optimizers results file ({type(exc).__name__}: {exc})",
            "pass --force instead of --resume to start over, or another --results path",
        ) from exc


@dataclass
class Outputs:
    """The files a comparison writes: results (each finished run), and optionally the CSV history and plot."""

    results: Path
    csv: Path | None = None  # None also for `--csv -` (stdout)
    plot: Path | None = None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.results, self.csv, self.plot) if p is not None]


def check_outputs(
    results: str, csv: str | None, plot: str | None, *, resume: bool, force: bool, json_out: bool = False
) -> Outputs:
    """The comparison's output files, checked before any training: writable, distinct, and ``results`` absent
    or (with ``resume``) a results file of this command — anything else only with ``force``, as ``train`` does
    for its checkpoint."""
    if csv == "-" and json_out:
        raise UsageError("--csv - and --json both write to stdout", "choose one, or give --csv a file name")
    outputs = Outputs(
        output_path(results, "--results"),
        output_path(csv, "--csv") if csv not in (None, "-") else None,
        output_path(plot, "--plot") if plot is not None else None,
    )
    given = ((outputs.results, "--results"), (outputs.csv, "--csv"), (outputs.plot, "--plot"))
    named = [(path, option) for path, option in given if path is not None]
    for i, (path, option) in enumerate(named):
        check_writable(path, option)
        for other, other_option in named[:i]:
            if os.path.abspath(path) == os.path.abspath(other):
                raise UsageError(f"{other_option} and {option} name the same file, {path}", "give each its own file")
    if outputs.results.exists() and not force:
        _check_replacing(outputs.results, resume)
    return outputs


def _check_replacing(path: Path, resume: bool) -> None:
    """``path`` exists: only a results file of this command may be resumed; nothing is replaced unasked."""
    try:
        saved = json.loads(path.read_bytes())
        is_results = isinstance(saved, dict) and saved.get("format") == RESULTS_FORMAT
    except (OSError, ValueError):
        is_results = False
    if not is_results:
        raise MnistctlError(
            f"{path} exists and is not a compare-optimizers results file", "pass --results another path, or --force"
        )
    if not resume:
        raise MnistctlError(
            f"{path} already holds a comparison",
            "pass --resume to skip its finished runs, --force to start over, or --results another path",
        )


def compare_optimizers(
    optimizers: list[str],
    lrs: dict[str, float],
    base: TrainConfig,
    data: MnistData,
    device: torch.device,
    *,
    results: Path | None = None,
    resume: bool = False,
    callbacks_for: Callable[[str, int, int], Any] | None = None,
) -> Comparison:
    """Run ``base`` once per optimizer (with its learning rate), from one set of initial weights. The networks
    are digit classifiers only (no "not a digit" class, no drawn non-digits), as the original question was,
    unless ``base.negatives`` says otherwise."""
    if base.negatives is None:
        base = replace(base, negatives=0.0)
    base = base.resolved(device_kind(device), default_precision(device))
    shared = {k: v for k, v in asdict(base).items() if k not in ("optimizer", "lr")}
    comparison = Comparison(base=shared)
    previous = _load_previous(results, shared) if (resume and results) else {}

    seed_everything(base.seed)
    arch = get_architecture(base.arch)
    initial = {k: v.clone() for k, v in arch.build(**arch.config_for(bool(base.negatives))).state_dict().items()}
    digest = weights_digest(initial)

    for i, name in enumerate(optimizers):
        done = previous.get(name)
        if done is not None and done.lr == lrs[name] and done.init_digest == digest:
            comparison.runs.append(previous[name])
            comparison.skipped.append(name)
            continue
        config = TrainConfig(**{**asdict(base), "optimizer": name, "lr": lrs[name]})
        callbacks = callbacks_for(name, i + 1, len(optimizers)) if callbacks_for else None
        start = time.perf_counter()
        try:
            result = fit(config, data, device, callbacks=callbacks, initial_state=initial)
        except Interrupted:
            finished = len(comparison.runs)
            where = f"; {finished} finished run(s) are in {results}" if (results and finished) else ""
            raise Interrupted(
                f"interrupted during the {name} run{where}",
                "rerun the same command with --resume to skip finished runs" if results else "nothing was kept",
            ) from None
        comparison.runs.append(RunResult(name, lrs[name], result.history, time.perf_counter() - start, digest))
        if results is not None:
            write_text_atomic(results, json.dumps(comparison.to_dict(), indent=1) + "\n")
    return comparison


def history_csv(comparison: Comparison) -> str:
    lines = ["optimizer,lr,epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds"]
    for run in comparison.runs:
        for h in run.history:
            lines.append(
                f"{run.optimizer},{run.lr:g},{h.epoch},{h.train_loss:.6f},{h.train_accuracy:.6f},"
                f"{h.test_loss:.6f},{h.test_accuracy:.6f},{h.seconds:.3f}"
            )
    return "\n".join(lines) + "\n"
