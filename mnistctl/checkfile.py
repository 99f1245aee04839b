"""The checkpoint format: what a checkpoint holds, and what a loaded file must hold to be taken for one.

A checkpoint may come from anyone. Once ``torch.load`` has read a file (which :mod:`mnistctl.checkpoint` bounds
first), :func:`validate` checks what it holds once, against one schema (:data:`FIELDS`) and the few rules that tie
entries together, and compares the weights with the network they claim to be on torch's "meta" device, so that no
file can make mnistctl build a network of any size, answer with NaN weights or trip later over a value of the
wrong type. :func:`check_resumable` rehearses ``train --resume`` the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import reprlib
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistctl.config import TrainConfig
from mnistctl.errors import MnistctlError, UsageError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "mnistctl-checkpoint"
VERSION = 3  # 2: weights_sha256; 3: meta_sha256, over what decides the network that is built and what it is fed
META = ("arch", "arch_config", "normalization")
MAX_DEPTH, MAX_VALUES = 32, 1_000_000  # how deep and how many the values of a loaded checkpoint may be


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
    """A checkpoint dict. ``training_state`` (optimizer, scheduler, RNG) is what ``--resume`` needs; a
    checkpoint without it holds weights only."""
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


class Invalid(Exception):
    """What makes a loaded object no usable checkpoint: the end of a sentence that begins with the file's name."""


Where = tuple  # a chain of keys, (parent, key), formatted only when something is wrong
Check = Callable[[Any, Where], None]  # raises Invalid when the value at ``where`` is not what it should be
REQUIRED = object()


def _fail(value: Any, where: Where, expected: str) -> typing.NoReturn:
    raise Invalid(f"{_place(where)} is {_shown(value)}, not {expected}")


BIGGEST = 2**63  # no count or setting comes near it; a bigger int cannot even be turned into a float


def _is_number(value: Any) -> bool:
    return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < BIGGEST)


def _real(value: Any, where: Where) -> None:
    if not _is_number(value):
        _fail(value, where, "a number")


def _number(above: float | None = None) -> Check:
    def check(value: Any, where: Where) -> None:
        _real(value, where)
        if not math.isfinite(value) or (above is not None and value <= above):
            _fail(value, where, "a finite number" + ("" if above is None else f" above {above:g}"))

    return check


def _whole(low: int) -> Check:
    def check(value: Any, where: Where) -> None:
        if not (isinstance(value, int) and _is_number(value) and value >= low):
            _fail(value, where, f"a whole number from {low}")

    return check


def _text(value: Any, where: Where) -> None:
    if not isinstance(value, str):
        _fail(value, where, "text")


def _sha256(value: Any, where: Where) -> None:
    if not (isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value)):
        _fail(value, where, "a sha256 digest")


def _anything(value: Any, where: Where) -> None:
    pass


def _optional(check: Check) -> Check:
    return lambda value, where: None if value is None else check(value, where)


def _table(keys: Check, values: Check) -> Check:
    def check(value: Any, where: Where) -> None:
        if not isinstance(value, dict):
            _fail(value, where, "a table")
        for key, item in value.items():
            keys(key, (where, key))
            values(item, (where, key))

    return check


def _items(check: Check) -> Check:
    def check_list(value: Any, where: Where) -> None:
        if not isinstance(value, list | tuple):
            _fail(value, where, "a list")
        for i, item in enumerate(value):
            check(item, (where, i))

    return check_list


def _record(fields: dict[str, Check], *, others: bool = False) -> Check:
    """A table with exactly these entries (and any ``others``)."""

    def check(value: Any, where: Where) -> None:
        if not isinstance(value, dict):
            _fail(value, where, f"a table of {', '.join(fields)}")
        for name, field_check in fields.items():
            if name not in value:
                raise Invalid(f"{_place((where, name))} is missing")
            field_check(value[name], (where, name))
        unknown = [key for key in value if key not in fields]
        if unknown and not others:
            raise Invalid(f"{_place(where)} holds unknown entries: {', '.join(map(_shown, unknown[:4]))}")

    return check


def _tensor(dtype: str | None = None) -> Check:
    def check(value: Any, where: Where) -> None:
        import torch

        if not isinstance(value, torch.Tensor) or (dtype and str(value.dtype) != f"torch.{dtype}"):
            _fail(value, where, f"a tensor of {dtype}" if dtype else "a tensor")

    return check


def _config(value: Any, where: Where) -> None:
    """The training run's settings: each of TrainConfig's of its type and a value some run could use (the file,
    not an option, is to blame for a bad one)."""
    _table(_text, _anything)(value, where)
    for name, hint in typing.get_type_hints(TrainConfig).items():
        if name not in value:
            continue
        setting, kinds = value[name], typing.get_args(hint) or (hint,)
        if not any(_is_a(setting, kind) for kind in kinds):
            _fail(setting, (where, name), " or ".join(_KIND_NAMES[kind] for kind in kinds))
        try:
            TrainConfig(**{name: setting}).validate()
        except UsageError:
            _fail(setting, (where, name), "a value any training run can use")
        if isinstance(setting, float) and not math.isfinite(setting):
            _fail(setting, (where, name), "a finite number")


_KIND_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false", type(None): "None"}


def _is_a(value: Any, kind: type) -> bool:
    if kind in (int, float):
        return _is_number(value) and isinstance(value, kind | int)
    return isinstance(value, kind)


def _history(value: Any, where: Where) -> None:
    """One table of results per epoch, as train.EpochResult holds them (what --resume rebuilds them into)."""
    from mnistctl.train import EpochResult

    fields = {f.name: f.default is dataclasses.MISSING for f in dataclasses.fields(EpochResult)}
    needed = {name for name, required in fields.items() if required}
    _items(_anything)(value, where)
    for i, entry in enumerate(value):
        if not (isinstance(entry, dict) and needed <= entry.keys() <= fields.keys()):
            _fail(entry, (where, i), f"the results of an epoch ({', '.join(fields)})")
        for name, result in entry.items():
            (_whole(1) if name == "epoch" else _real)(result, ((where, i), name))


_TENSORS = _table(_text, _tensor())
_OPTIMIZER = _record(
    {
        "state": _table(_whole(0), _table(_text, _anything)),
        "param_groups": _items(_record({"params": _items(_whole(0))}, others=True)),
    }
)

# Every entry a checkpoint may hold: how it is checked, and its value when absent (REQUIRED: it must be there).
# Entries not named here (a bundle's provenance, say) are kept as they are.
FIELDS: dict[str, tuple[Check, Any]] = {
    "format": (_text, REQUIRED),
    "version": (_whole(1), 1),
    "arch": (_text, REQUIRED),
    "arch_config": (_table(_text, _anything), {}),  # then against the architecture's own bounds
    "state_dict": (_TENSORS, REQUIRED),
    "normalization": (_record({"mean": _number(), "std": _number(above=0)}), REQUIRED),
    "weights_sha256": (_optional(_sha256), None),
    "model_state": (_optional(_TENSORS), None),
    "model_state_sha256": (_optional(_sha256), None),
    "meta_sha256": (_optional(_sha256), None),
    "epoch": (_whole(0), 0),
    "optimizer": (_optional(_OPTIMIZER), None),
    "scheduler": (_optional(_table(_text, _anything)), None),
    "scaler": (_optional(_table(_text, _number())), None),
    "rng": (_optional(_record({"torch": _tensor("uint8")})), None),
    "ema_steps": (_whole(0), 0),
    "config": (_config, {}),
    "history": (_history, []),
    "metrics": (_table(_text, _optional(_real)), {}),
    "versions": (_table(_text, _text), {}),
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

    from mnistctl.checkpoint import MAX_UNPACKED

    referred = 0  # bytes over every reference: one tensor listed a million times costs a million checks
    for value, where in _walk(obj):
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.device.type != "cpu":
                _fail(value, where, "a plain tensor")
            nbytes = value.numel() * value.element_size()
            if nbytes > value.untyped_storage().nbytes():
                raise Invalid(f"{_place(where)} is a tensor larger than the data it is made of")
            referred += nbytes
            if referred > MAX_UNPACKED:
                raise Invalid(f"it refers to more tensor data than any checkpoint holds ({MAX_UNPACKED:,} bytes)")


def _walk(obj: Any, root: Where = ()) -> Iterator[tuple[Any, Where]]:
    """Every value in ``obj`` with where it is, each container once: a pickle can share a container many times,
    put it inside itself or nest thousands deep, and none of that may cost more than its size."""
    seen: set[int] = set()
    stack: list[tuple[Any, Where, int]] = [(obj, root, 0)]
    for _ in range(MAX_VALUES):
        if not stack:
            return
        value, where, depth = stack.pop()
        yield value, where
        if isinstance(value, dict | list | tuple) and id(value) not in seen:
            seen.add(id(value))
            if depth == MAX_DEPTH:
                raise Invalid(f"it is nested deeper than any checkpoint ({MAX_DEPTH} levels)")
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, (where, key), depth + 1) for key, item in pairs)
    raise Invalid(f"it holds more values than any checkpoint ({MAX_VALUES:,})")


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
            if _fit_problem(network, obj) is None:
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
    keys = ", ".join(map(_shown, list(obj)[:4]))
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
            f"{path} uses an architecture this mnistctl does not know ({_shown(arch)})", "upgrade mnistctl"
        )
    problem = ARCHITECTURES[arch].config_problem(checkpoint["arch_config"])
    if problem:
        raise Invalid(f"its arch_config asks for a {arch} network mnistctl does not build: {problem}")
    trained = checkpoint["config"].get("arch")
    if trained not in (None, arch):
        raise Invalid(f"its config is for the {_shown(trained)} network, but it holds weights of {arch!r}")
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
        problem = _fit_problem(network, checkpoint[weights])
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
            raise MnistctlError(f"{path} holds numbers that are not finite (NaN or infinity) in {_place(where)}", hint)


def _fit_problem(network: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` differs from ``network``'s own state_dict in names, shapes or dtypes, or None."""
    expected = network.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        return f"missing {_shown(missing)}, unexpected {_shown(unexpected)}"
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{key} is {_shown(got)}, the network's is {_shown(want)}"
    return None


def _not_finite(obj: Any, root: Where) -> Where | None:
    import torch

    for value, where in _walk(obj, root):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return where
        if isinstance(value, float) and not math.isfinite(value):
            return where
    return None


def _place(where: Where) -> str:
    """``((((), 'optimizer'), 'state'), 0)`` as ``optimizer['state'][0]``."""
    keys: list[Any] = []
    while where:
        where, key = where
        keys.append(key)
    if not keys:
        return "it"
    name, *rest = reversed(keys)
    return str(name) + "".join(f"[{_shown(key)}]" for key in rest)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist = 60, 60, 4


def _shown(value: Any) -> str:
    """``value`` as a few characters of an error line."""
    if type(value).__module__.startswith("torch") and hasattr(value, "shape"):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    try:
        return _REPR.repr(value)
    except ValueError:  # an int of more digits than Python turns into text
        return f"a {type(value).__name__} too long to show"


# --------------------------------------------------------------------------------------------- resuming


def check_resumable(checkpoint: dict[str, Any], path: Path, stored: TrainConfig) -> None:
    """Rehearse what ``train --resume`` does with ``checkpoint``'s training state, on a copy of it and a network on
    the meta device: a state that does not fit its run is an error naming the file now, not an unexpected one later.
    """
    import torch

    from mnistctl.models import ARCHITECTURES
    from mnistctl.train import EpochResult, make_optimizer, schedule_factor

    def refuse(why: str) -> typing.NoReturn:
        raise MnistctlError(f"{path} cannot be resumed: {why}", "start a new run (another -o, or --force)")

    if stored.arch != checkpoint["arch"]:
        refuse("its config does not say which network it trains")
    if checkpoint["scheduler"] is None or checkpoint["rng"] is None:
        refuse("it has an optimizer state but no scheduler or RNG state")
    config = stored.resolved()  # what fit() fills in for settings the file leaves out
    network = ARCHITECTURES[checkpoint["arch"]].build_on_meta()  # what fit() trains: the network at its own sizes
    for weights in ("state_dict", "model_state"):
        problem = checkpoint[weights] is not None and _fit_problem(network, checkpoint[weights])
        if problem:
            refuse(f"its {weights} is not of the {checkpoint['arch']} network that mnistctl trains ({problem})")
    try:
        optimizer = make_optimizer(config, network)
        optimizer.load_state_dict(copy.deepcopy(checkpoint["optimizer"]))  # a step changes some of it in place
        for parameter in network.parameters():
            parameter.grad = torch.zeros_like(parameter)
        optimizer.step()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(config.schedule, 1))
        scheduler.load_state_dict(copy.deepcopy(checkpoint["scheduler"]))
        if len(scheduler.base_lrs) != len(optimizer.param_groups):
            raise ValueError(f"{len(scheduler.base_lrs)} learning rates for {len(optimizer.param_groups)} groups")
        scheduler.step()
        if checkpoint["scaler"]:
            torch.amp.GradScaler("cpu").load_state_dict(dict(checkpoint["scaler"]))
        torch.Generator().set_state(checkpoint["rng"]["torch"])
        [EpochResult(**entry) for entry in checkpoint["history"]]
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError) as exc:
        refuse(f"its training state does not fit its run ({first_line(exc, 160)})")
