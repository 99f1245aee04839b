"""Training batches: the images resident on the training device, a seeded order each epoch, and augmentation,
normalisation and memory layout applied per batch on that device.

Every epoch's order and augmentation come from a generator seeded with (seed, epoch), so a run resumed after
epoch k sees exactly the batches an uninterrupted run sees. Under torchrun every rank draws the same global
batch and keeps its own contiguous part of it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F


class BatchOptions(Protocol):
    batch_size: int
    augment: bool
    rotate: float
    scale: float
    shift: float
    elastic: float
    seed: int
    channels_last: bool


class EpochBatches:
    """The training set, one epoch at a time: ``for x, y, size in batches.epoch(k)``.

    ``x`` is this rank's part of the batch, augmented, normalised and laid out as the network wants it; ``size``
    is the size of the whole (global) batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        options: BatchOptions,
        normalization: tuple[float, float],
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images = images.to(device)  # uint8: a quarter of the memory of floats; converted per batch
        self.labels = labels.to(device)
        self.options = options
        self.mean, self.std = normalization
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.steps = math.ceil(len(images) / options.batch_size)

    def __len__(self) -> int:
        return len(self.images)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        opts, n = self.options, len(self.images)
        gen = torch.Generator(self.device).manual_seed(opts.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen, device=self.device)
        for step in range(self.steps):
            idx = order[step * opts.batch_size : (step + 1) * opts.batch_size]
            size = len(idx)
            draws = 4 + (ELASTIC_NUMBERS if opts.elastic else 0) + LOWRES_NUMBERS
            u = torch.rand(size, draws, generator=gen, device=self.device) if opts.augment else None
            part = shard(size, self.rank, self.world_size)
            idx = idx[part]
            x = self.images[idx].unsqueeze(1).float().div_(255.0)
            if u is not None:
                x = augment_batch(x, u[part], opts.rotate, opts.scale, opts.shift, opts.elastic, LOWRES_SHARE)
            x = (x - self.mean) / self.std
            if opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx], size


def shard(length: int, rank: int, world: int) -> slice:
    """This rank's contiguous part of a global batch of ``length`` images."""
    per = math.ceil(length / world)
    return slice(min(length, rank * per), min(length, (rank + 1) * per))


ELASTIC_GRID = 4  # the random displacement field is drawn on a 4×4 grid and smoothly interpolated to 28×28
ELASTIC_NUMBERS = 2 * ELASTIC_GRID * ELASTIC_GRID
# A share of the augmented images is seen at low resolution — reduced to SIDES pixels a side and brought back
# up, blurred and blocky — as scans and small photos of digits are (scikit-learn's 8×8 digits fill about 11 px
# of a 28 px MNIST frame). Two numbers per image: whether, and how small.
LOWRES_SHARE = 0.15
LOWRES_SIDES = (10, 16)
LOWRES_NUMBERS = 2


def augment_batch(
    x: torch.Tensor, u: torch.Tensor, rotate: float, scale: float, shift: float, elastic: float = 0.0,
    lowres: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Rotate, scale, shift and (``elastic`` > 0) smoothly warp each image of N×1×28×28 pixels in [0, 1].

    ``u``: uniform numbers in [0, 1) drawn for the batch, N×4 (rotation, scale, x shift, y shift), plus
    ELASTIC_NUMBERS more per image for the warp: displacements of up to ``elastic`` pixels on a coarse grid,
    interpolated linearly — strokes bend the way handwriting varies, for two small matrix products.
    Without rotation, scaling or warping the shift is by whole pixels, which costs a fifth of resampling.
    """
    if not lowres:
        return _geometric(x, u, rotate, scale, shift, elastic)
    x = _geometric(x, u[:, :-LOWRES_NUMBERS], rotate, scale, shift, elastic)
    return _low_resolution(x, u[:, -LOWRES_NUMBERS:], lowres)


def _low_resolution(x: torch.Tensor, u: torch.Tensor, share: float) -> torch.Tensor:
    """``share`` of the images (``u[:, 0]`` below it) reduced to a side of LOWRES_SIDES (``u[:, 1]``: a size
    each, by area) and brought back to their size (bilinear)."""
    chosen = u[:, 0] < share
    if not bool(chosen.any()):
        return x
    low, high = LOWRES_SIDES
    out = x.clone()
    sides = (low + u[:, 1] * (high - low + 1)).long().clamp(low, high)
    for side in sides[chosen].unique().tolist():
        which = chosen & (sides == side)
        small = F.interpolate(x[which], size=(side, side), mode="area")
        out[which] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


def _geometric(
    x: torch.Tensor, u: torch.Tensor, rotate: float, scale: float, shift: float, elastic: float
) -> torch.Tensor:
    n, _, h, w = x.shape
    u = u * 2 - 1
    if rotate == 0 and scale == 0 and elastic == 0:
        return _shift_whole_pixels(x, u[:, 2:4], int(round(shift)))
    angle = u[:, 0] * math.radians(rotate)
    s = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    tx, ty = u[:, 2] * (2 * shift / w), u[:, 3] * (2 * shift / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic:
        coarse = u[:, 4:].reshape(n, 2, ELASTIC_GRID, ELASTIC_GRID) * (2 * elastic / w)  # in grid units
        rows, cols = _spread(h, x.device), _spread(w, x.device)
        grid = grid + (rows @ coarse @ cols.T).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@functools.lru_cache(maxsize=8)
def _spread(size: int, device: torch.device) -> torch.Tensor:
    """size × ELASTIC_GRID weights that interpolate values on the coarse grid linearly onto ``size`` pixels."""
    eye = torch.eye(ELASTIC_GRID, device=device).unsqueeze(0)  # each grid point as a channel of its own
    return F.interpolate(eye, size=size, mode="linear", align_corners=True)[0].T


def _shift_whole_pixels(x: torch.Tensor, u: torch.Tensor, shift: int) -> torch.Tensor:
    """Move each image by (dx, dy) whole pixels, |dx|, |dy| <= shift, filling with black."""
    if shift <= 0:
        return x
    n, c, h, w = x.shape
    d = (u * (shift + 0.5)).round().clamp(-shift, shift).long() + shift  # 0 … 2·shift
    padded = F.pad(x, (shift, shift, shift, shift))
    rows = (d[:, 1, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * shift)
    padded = padded.gather(2, rows)
    cols = (d[:, 0, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(3, cols)
