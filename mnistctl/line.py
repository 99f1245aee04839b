"""The line network (:class:`~mnistctl.models.LineNet`): its file, and what its outputs say.

The number reader gives it each group of ink that may be several digits touching (a strip:
:func:`~mnistctl.imaging.segment.line_strip`); it answers, for every FRAME px column, how likely each digit,
"not a digit", and CTC's blank ("nothing new here") are. :func:`decode` reads that as symbols left to right;
where a file holds several networks, :func:`decode_surest` takes the surest of their readings.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistctl.errors import MnistctlError, first_line

if TYPE_CHECKING:
    import torch

LINE_MODEL = Path(__file__).parent / "weights" / "line_model.pt"
FORMAT = "mnistctl-line/2"
NOT_A_DIGIT_CLASS = 10
BLANK_CLASS = 11


MOST_MEMBERS = 4  # line networks in one file, at most (each reads every strip)


@dataclass(frozen=True)
class Member:
    """One line network of a file: the network (fp32, eval mode), its calibration temperature, how it was made."""

    net: torch.nn.Module
    temperature: float
    made: dict[str, Any]


def save_line_model(members: Sequence[Member], path: Path) -> None:
    """Write the line networks (weights in fp16: half the size, the same readings), each with its calibration
    temperature and how it was made, to ``path``: serialised in memory, then written whole or not at all."""
    import torch

    from mnistctl.fsutil import atomic_file

    if not 1 <= len(members) <= MOST_MEMBERS:
        raise ValueError(f"a line model holds 1 to {MOST_MEMBERS} networks, not {len(members)}")
    saved = [
        {
            "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in m.net.state_dict().items()},
            "temperature": m.temperature,
            "made": m.made,
        }
        for m in members
    ]
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "members": saved}, buffer)
    with atomic_file(path) as f:
        f.write(buffer.getbuffer())


def read_line_model(path: str | os.PathLike[str]) -> list[Member]:
    """The line networks in ``path`` (fp32, on the CPU). The file is read as a checkpoint is
    (:func:`~mnistctl.archive.read_archive`: bounded, no pickle that runs code); anything wrong with it is one
    :class:`MnistctlError` naming it."""
    from mnistctl.archive import read_archive
    from mnistctl.models import LineNet

    path = Path(path)
    saved = read_archive(path, REINSTALL)
    out = []
    try:
        found = saved.get("format") if isinstance(saved, dict) else None
        if isinstance(found, str) and found.startswith("mnistctl-line/") and found != FORMAT:
            raise ValueError(f"it is a line model of another mnistctl ({found}; this one reads {FORMAT})")
        if found != FORMAT:
            raise ValueError(f"it is not an mnistctl line model ({FORMAT})")
        members = saved.get("members")
        if not isinstance(members, list) or not 1 <= len(members) <= MOST_MEMBERS:
            raise ValueError(f"it holds no list of 1 to {MOST_MEMBERS} networks")
        for k, member in enumerate(members, 1):
            if not isinstance(member, dict):
                raise ValueError(f"its network {k} is not a table")
            net = LineNet()
            try:
                net.load_state_dict(_checked_weights(member.get("state_dict"), net.state_dict()))
            except ValueError as e:
                raise ValueError(f"network {k}: {e}") from None
            temperature, made = member.get("temperature"), member.get("made", {})
            number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
            if not number or not 0.05 <= temperature <= 20:
                raise ValueError(f"network {k}: its temperature is not a number from 0.05 to 20")
            out.append(Member(net.eval(), float(temperature), made if isinstance(made, dict) else {}))
    except (ValueError, RuntimeError) as e:  # RuntimeError: torch on a tensor it cannot compute with (sparse, say)
        raise MnistctlError(f"{path}: cannot load the line model: {first_line(e)}", REINSTALL) from None
    return out


def load_line_model(path: str | os.PathLike[str], device: torch.device) -> torch.nn.Module:
    """The line network(s) in ``path`` as one module on ``device`` for inference (:class:`~mnistctl.models.
    LineEnsemble`): strips in, each network's log-probabilities at its temperature out, for
    :func:`decode_surest`."""
    from mnistctl.models import LineEnsemble

    members = read_line_model(path)
    return LineEnsemble([m.net for m in members], [m.temperature for m in members]).to(device).eval()


REINSTALL = "reinstall mnistctl (pip install --force-reinstall mnistctl), or pass line_model=False"


def _checked_weights(state: Any, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as the network's weights (fp32), if it is exactly what the network has: the same names, each
    a real tensor of its shape and kind, finite, no negative variance. Raises ValueError saying what is not."""
    import torch

    if not isinstance(state, dict):
        raise ValueError("it holds no weights")
    for name in sorted(set(expected) ^ set(state), key=str)[:1]:
        raise ValueError(f"{'it lacks' if name in expected else 'it has an unknown'} weight {str(name)[:80]!r}")
    out = {}
    for name, want in expected.items():
        got = state[name]
        floats = want.is_floating_point()
        kind = isinstance(got, torch.Tensor) and (got.is_floating_point() if floats else got.dtype == want.dtype)
        if not kind or got.shape != want.shape:
            raise ValueError(f"its weight {name!r} is not a {tuple(want.shape)} tensor of {want.dtype}")
        if floats and not bool(torch.isfinite(got).all()):
            raise ValueError(f"its weight {name!r} is not all finite numbers")
        if name.endswith("running_var") and bool((got < 0).any()):
            raise ValueError(f"its weight {name!r} has a negative variance")
        out[name] = got.to(want.dtype)
    return out


def decode_surest(scores: torch.Tensor | np.ndarray) -> list[tuple[list[float], tuple[int, int]]]:
    """The symbols in one strip as read by several networks (networks×classes×frames log-probabilities): each
    network's reading (:func:`decode`), and of those the likeliest under all of them together — the sum over
    the networks of the reading's CTC log-likelihood (every alignment of it counted, so a reading is not
    favoured for being short, nor for where one network puts its peaks). Ties, and a reading no network can
    score (a broken one's NaN): the first network's."""
    import torch

    scores = np.asarray(scores)
    readings = [decode(one) for one in scores]
    labels = [[max(range(BLANK_CLASS), key=p.__getitem__) for p, _ in read] for read in readings]
    if all(same == labels[0] for same in labels):  # one network, or all agree (no frames: all read nothing)
        return readings[0]
    by_frame = torch.as_tensor(scores.astype(np.float32)).log_softmax(1).permute(2, 0, 1)  # as ctc_loss takes them
    frames, networks = by_frame.shape[:2]

    def likelihood(k: int) -> float:
        lost = torch.nn.functional.ctc_loss(
            by_frame, torch.tensor([labels[k]] * networks), [frames] * networks, [len(labels[k])] * networks,
            blank=BLANK_CLASS, reduction="none",
        )  # fmt: skip
        total = -float(lost.sum())
        return total if math.isfinite(total) else -math.inf

    return readings[max(range(len(readings)), key=likelihood)]


def decode(scores: torch.Tensor | np.ndarray, temperature: float = 1.0) -> list[tuple[list[float], tuple[int, int]]]:
    """The symbols in one strip's scores (classes×frames), left to right: for each, the probabilities of the
    ten digits and "not a digit" (eleven, summing to 1) at the frame where it is most surely there, and its
    first and last frame. Greedy CTC decoding: each frame's likeliest class; a run of one class is one symbol,
    blanks none. Never none: ink is there, so where every frame is likeliest blank, the frame where a symbol
    is likeliest is one."""
    logits = np.asarray(scores, np.float64) / temperature
    logits -= logits.max(0, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(0, keepdims=True)
    best = probabilities.argmax(0)
    out = []
    frame = 0
    frames = len(best)
    while frame < frames:
        c = best[frame]
        end = frame
        while end + 1 < frames and best[end + 1] == c:
            end += 1
        if c != BLANK_CLASS:
            there = 1 - probabilities[BLANK_CLASS, frame : end + 1]
            peak = frame + int(there.argmax())
            p = probabilities[:BLANK_CLASS, peak]
            out.append(((p / p.sum()).tolist(), (frame, end)))
        frame = end + 1
    if not out and frames:
        peak = int(probabilities[BLANK_CLASS].argmin())
        p = probabilities[:BLANK_CLASS, peak]
        out.append(((p / p.sum()).tolist(), (peak, peak)))
    return out
