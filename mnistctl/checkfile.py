"""The checkpoint format on disk: the dict a checkpoint file holds, and what a loaded one must hold to be taken for one.

A checkpoint may come from anyone. Once ``torch.load`` has read a file (which :mod:`mnistctl.archive` bounds
first), :func:`validate` checks what it holds once, against one schema (:data:`FIELDS`) and the few rules that tie
entries together, and compares the weights with the network they claim to be on torch's "meta" device, so that no
file can make mnistctl build a network of any size, answer with NaN weights or trip later over a value of the
wrong type. :class:`mnistctl.checkpoint.Checkpoint` is the typed object made from what passes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistctl.archive import MAX_UNPACKED
from mnistctl.config import TrainConfig
from mnistctl.errors import MnistctlError, UsageError
from mnistctl.schema import (
    REQUIRED,
    Check,
    Invalid,
    Where,
    anything,
    fail,
    is_number,
    items,
    number,
    optional,
    place,
    real,
    record,
    sha256,
    shown,
    table,
    tensor,
    text,
    walk,
    whole,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "mnistctl-checkpoint"
VERSION = 3  # 2: weights_sha256; 3: meta_sha256, over what decides the network that is built and what it is fed
META = ("arch", "arch_config", "normalization")


# --------------------------------------------------------------------------------------------- writing


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def meta_digest(checkpoint: dict[str, Any]) -> str:
    """sha256 over :data:`META` as canonical JSON: a damaged ``arch_config`` is found like damaged weights."""
    meta = {key: checkpoint[key] for key in META}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_checkpoint(
    *,
    arch: str,
    arch_config: dict[str, Any],
    state_dict: dict[str, Any],
    normalization: tuple[float, float],
    epoch: int,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint as the file holds it, in the current format (:data:`VERSION`), its checksums computed.
    ``training_state`` (optimizer, scheduler, RNG, …) is what ``--resume`` needs; without it, weights only.
    ``Checkpoint.to_dict`` writes through this; tests use it to craft files."""
    import torch

    from mnistctl import __version__

    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_config": arch_config,
        "state_dict": state_dict,
        "weights_sha256": weights_digest(state_dict),
        **_training_digest(training_state),
        "normalization": {"mean": float(normalization[0]), "std": float(normalization[1])},
        "epoch": epoch,
        **(training_state or {"optimizer": None, "scheduler": None, "rng": None}),
        "config": config,
        "history": history,
        "metrics": metrics,
        "versions": {"mnistctl": __version__, "torch": str(torch.__version__), "python": sys.version.split()[0]},
    }
    return {**checkpoint, "meta_sha256": meta_digest(checkpoint)}


def _training_digest(training_state: dict[str, Any] | None) -> dict[str, str]:
    """With an EMA, the weights being trained (what --resume continues) are kept beside the average: checked too."""
    model_state = (training_state or {}).get("model_state")
    return {"model_state_sha256": weights_digest(model_state)} if model_state else {}


# --------------------------------------------------------------------------------------------- the schema


def _config(value: Any, where: Where) -> None:
    """The training run's settings: each of TrainConfig's of its type and a value some run could use (the file,
    not an option, is to blame for a bad one)."""
    table(text, anything)(value, where)
    for name, hint in typing.get_type_hints(TrainConfig).items():
        if name not in value:
            continue
        setting, kinds = value[name], typing.get_args(hint) or (hint,)
        if not any(_is_a(setting, kind) for kind in kinds):
            fail(setting, (where, name), " or ".join(_KIND_NAMES[kind] for kind in kinds))
        try:
            TrainConfig(**{name: setting}).validate()
        except UsageError:
            fail(setting, (where, name), "a value any training run can use")
        if isinstance(setting, float) and not math.isfinite(setting):
            fail(setting, (where, name), "a finite number")


_KIND_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false", type(None): "None"}


def _is_a(value: Any, kind: type) -> bool:
    if kind in (int, float):
        return is_number(value) and isinstance(value, kind | int)
    return isinstance(value, kind)


def _history(value: Any, where: Where) -> None:
    """One table of results per epoch, as engine.EpochResult holds them (what --resume rebuilds them into)."""
    from mnistctl.engine import EpochResult

    fields = {f.name: f.default is dataclasses.MISSING for f in dataclasses.fields(EpochResult)}
    needed = {name for name, required in fields.items() if required}
    items(anything)(value, where)
    for i, entry in enumerate(value):
        if not (isinstance(entry, dict) and needed <= entry.keys() <= fields.keys()):
            fail(entry, (where, i), f"the results of an epoch ({', '.join(fields)})")
        for name, result in entry.items():
            (whole(1) if name == "epoch" else real)(result, ((where, i), name))


_TENSORS = table(text, tensor())
_OPTIMIZER = record(
    {
        "state": table(whole(0), table(text, anything)),
        "param_groups": items(record({"params": items(whole(0))}, others=True)),
    }
)

# Every entry a checkpoint may hold: how it is checked, and its value when absent (REQUIRED: it must be there).
# Entries not named here (a bundle's provenance, say) are kept as they are.
FIELDS: dict[str, tuple[Check, Any]] = {
    "format": (text, REQUIRED),
    "version": (whole(1), 1),
    "arch": (text, REQUIRED),
    "arch_config": (table(text, anything), {}),  # then against the architecture's own bounds
    "state_dict": (_TENSORS, REQUIRED),
    "normalization": (record({"mean": number(), "std": number(above=0)}), REQUIRED),
    "weights_sha256": (optional(sha256), None),
    "model_state": (optional(_TENSORS), None),
    "model_state_sha256": (optional(sha256), None),
    "meta_sha256": (optional(sha256), None),
    "epoch": (whole(0), 0),
    "optimizer": (optional(_OPTIMIZER), None),
    "scheduler": (optional(table(text, anything)), None),
    "scaler": (optional(table(text, number())), None),
    "rng": (optional(record({"torch": tensor("uint8")})), None),
    "ema_steps": (whole(0), 0),
    "config": (_config, {}),
    "history": (_history, []),
    "metrics": (table(text, optional(real)), {}),
    "versions": (table(text, text), {}),
}


# --------------------------------------------------------------------------------------------- validation


def validate(obj: Any, path: Path, hint: str) -> dict[str, Any]:
    """``obj``, as torch.load gave it, if it is a checkpoint mnistctl can use, with absent optional entries filled
    in (a plain state_dict of one of mnistctl's networks becomes one); else a one-line error naming ``path``."""
    try:
        _check_values(obj)
        checkpoint = obj if isinstance(obj, dict) and obj.get("format") == FORMAT else _from_state_dict(obj, path)
        _check_version(checkpoint, path)
        for name, (check, default) in FIELDS.items():
            if name in checkpoint:
                check(checkpoint[name], ((), name))
            elif default is REQUIRED:
                raise Invalid(f"it has no {name}")
            else:
                checkpoint[name] = copy.copy(default)
        _check_agreement(checkpoint, path)
    except Invalid as exc:
        raise MnistctlError(f"{path} is not a valid mnistctl checkpoint: {exc}", hint) from None
    if checkpoint["version"] >= 3 and checkpoint["meta_sha256"] != meta_digest(checkpoint):
        raise MnistctlError(f"{path} is corrupt: its network's description does not match its checksum", hint)
    _check_weights(checkpoint, path, hint)
    return checkpoint


def _check_values(obj: Any) -> None:
    """Every tensor is a plain one on the CPU, no bigger than the bytes it is made of: a view that repeats a few
    bytes over a huge shape would cost its full size when copied or checksummed."""
    import torch

    referred = 0  # bytes over every reference: one tensor listed a million times costs a million checks
    for value, where in walk(obj):
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.device.type != "cpu":
                fail(value, where, "a plain tensor")
            nbytes = value.numel() * value.element_size()
            if nbytes > value.untyped_storage().nbytes():
                raise Invalid(f"{place(where)} is a tensor larger than the data it is made of")
            referred += nbytes
            if referred > MAX_UNPACKED:
                raise Invalid(f"it refers to more tensor data than any checkpoint holds ({MAX_UNPACKED:,} bytes)")


def _from_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    """A plain state_dict (what ``torch.save(model.state_dict())`` writes) of one of mnistctl's networks at its
    default sizes, as a checkpoint: the original project's ``digit_model.pt`` is one of ``seed``."""
    import torch

    from mnistctl.models import ARCHITECTURES

    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise MnistctlError(f"{path} is not an mnistctl checkpoint", "pass a file written by `mnistctl train`")
    _TENSORS(obj, ((), "state_dict"))
    same_layers = []
    for name, arch in ARCHITECTURES.items():
        network = arch.build_on_meta()
        if network.state_dict().keys() == obj.keys():
            same_layers.append(name)
            if fit_problem(network, obj) is None:
                whose = "the original DigitClassifier" if name == "seed" else f"mnistctl's {name} network"
                return make_checkpoint(
                    arch=name,
                    arch_config=dict(arch.defaults),
                    state_dict=obj,
                    normalization=arch.normalization,
                    epoch=0,
                    config={"source": f"plain state_dict of {whose}"},
                    history=[],
                    metrics={},
                )
    if same_layers:
        raise MnistctlError(
            f"{path} is a state_dict of mnistctl's {' or '.join(same_layers)} network, but with other layer sizes",
            "pass a checkpoint written by `mnistctl train`, which says its sizes",
        )
    keys = ", ".join(map(shown, list(obj)[:4]))
    raise MnistctlError(
        f"{path} is a state_dict of a network mnistctl does not know (keys: {keys}, …)",
        "pass a checkpoint written by `mnistctl train` or the original project's digit_model.pt",
    )


def _check_version(checkpoint: dict[str, Any], path: Path) -> None:
    version = checkpoint.get("version", FIELDS["version"][1])
    FIELDS["version"][0](version, ((), "version"))
    if version > VERSION:
        raise MnistctlError(f"{path} was written by a newer mnistctl (checkpoint format {version})", "upgrade mnistctl")


def _check_agreement(checkpoint: dict[str, Any], path: Path) -> None:
    """The rules between entries: a network this mnistctl builds, at sizes it allows, that its config and
    history agree with."""
    from mnistctl.models import ARCHITECTURES

    arch = checkpoint["arch"]
    if arch not in ARCHITECTURES:
        raise MnistctlError(
            f"{path} uses an architecture this mnistctl does not know ({shown(arch)})", "upgrade mnistctl"
        )
    problem = ARCHITECTURES[arch].config_problem(checkpoint["arch_config"])
    if problem:
        raise Invalid(f"its arch_config asks for a {arch} network mnistctl does not build: {problem}")
    trained = checkpoint["config"].get("arch")
    if trained not in (None, arch):
        raise Invalid(f"its config is for the {shown(trained)} network, but it holds weights of {arch!r}")
    history = checkpoint["history"]
    if history and history[-1]["epoch"] != checkpoint["epoch"]:
        raise Invalid(f"its history ends at epoch {history[-1]['epoch']}, but its epoch is {checkpoint['epoch']}")


def _check_weights(checkpoint: dict[str, Any], path: Path, hint: str) -> None:
    """The weights fit the network (compared on the meta device, before any memory is spent on it), match their
    checksums and, with the rest of the training state, are finite numbers."""
    from mnistctl.models import ARCHITECTURES

    arch = checkpoint["arch"]
    network = ARCHITECTURES[arch].build_on_meta(**checkpoint["arch_config"])
    for weights, digest in (("state_dict", "weights_sha256"), ("model_state", "model_state_sha256")):
        if checkpoint[weights] is None:
            continue
        problem = fit_problem(network, checkpoint[weights])
        if problem:
            raise MnistctlError(
                f"the weights in {path} do not fit architecture {arch!r} ({problem})",
                "the checkpoint is damaged or was edited; train a new one",
            )
        expected = checkpoint[digest]
        if (expected is None and checkpoint["version"] >= 3) or (
            expected is not None and weights_digest(checkpoint[weights]) != expected
        ):  # no checksums before version 2; in version 3, every set of weights has one
            raise MnistctlError(f"{path} is corrupt: its weights do not match their checksum", hint)
    for name in ("state_dict", "model_state", "optimizer", "scheduler", "scaler"):
        where = _not_finite(checkpoint[name], ((), name))
        if where is not None:
            raise MnistctlError(f"{path} holds numbers that are not finite (NaN or infinity) in {place(where)}", hint)


def fit_problem(network: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` differs from ``network``'s own state_dict in names, shapes or dtypes, or None."""
    expected = network.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        return f"missing {shown(missing)}, unexpected {shown(unexpected)}"
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{key} is {shown(got)}, the network's is {shown(want)}"
    return None


def _not_finite(obj: Any, root: Where) -> Where | None:
    import torch

    for value, where in walk(obj, root):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return where
        if isinstance(value, float) and not math.isfinite(value):
            return where
    return None
