#!/usr/bin/env python
"""Architecture / recipe search for the default `mnistctl train --epochs 10` network (CPU).

Self-contained: reads MNIST from gzip IDX files, keeps uint8 tensors in memory, no DataLoader.

Examples (throughput numbers are only meaningful when nothing else runs on the 2 cores; every run
prints how many CPU-seconds other processes used meanwhile, and the p10-step estimate of the epoch time)
  python bench/arch_search.py --list
  python bench/arch_search.py --profile --model u16 --channels-last
  python bench/arch_search.py --model u16 --channels-last --quick --seed 0          # 3-epoch screen
  python bench/arch_search.py --model u16 --channels-last --epochs 10 --seeds 0 1 2  # full run
  python bench/arch_search.py --model 'u,c24,c48p,c64p' --channels-last --ls 0.1     # ad-hoc spec
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import struct
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081
DEFAULT_DATA = "/work/shared/mnist"


# ----------------------------------------------------------------------------- data
def read_idx(path: Path) -> torch.Tensor:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic.hex()})")
    ndim = magic[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.reshape(dims)


def load_mnist(root: str):
    r = Path(root)
    xtr = read_idx(r / "train-images-idx3-ubyte.gz").unsqueeze(1).contiguous()  # (60000,1,28,28) uint8
    ytr = read_idx(r / "train-labels-idx1-ubyte.gz").long()
    xte = read_idx(r / "t10k-images-idx3-ubyte.gz").unsqueeze(1).contiguous()
    yte = read_idx(r / "t10k-labels-idx1-ubyte.gz").long()
    return xtr, ytr, xte, yte


def to_float(xb_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B,1,28,28) -> float in [0,1]."""
    return xb_u8.float().mul_(1.0 / 255.0)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return x.sub_(MEAN).mul_(1.0 / STD)


# ----------------------------------------------------------------------------- augmentation
def aug_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random integer translation per image in [-max_shift, max_shift] (zero fill) via pad + gather."""
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (B,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=gen)
    rows = dy[:, None] + torch.arange(H)[None, :]  # (B,H)
    cols = dx[:, None] + torch.arange(W)[None, :]  # (B,W)
    xp = xp.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * p))
    return xp.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def aug_affine(x: torch.Tensor, rot_deg: float, scale: float, shift_px: float, gen: torch.Generator) -> torch.Tensor:
    """Random rotation ±rot_deg, isotropic scale in [1-scale, 1+scale], translation ±shift_px (bilinear, zero fill)."""
    B, _, H, W = x.shape
    u = torch.rand(B, 4, generator=gen) * 2 - 1
    ang = u[:, 0] * (rot_deg * math.pi / 180)
    s = 1 + u[:, 1] * scale
    tx = u[:, 2] * (2 * shift_px / W)
    ty = u[:, 3] * (2 * shift_px / H)
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------- models
class ConvBN(nn.Sequential):
    """conv (no bias) -> [maxpool2] -> BN -> ReLU   (pool before BN/ReLU: 4x less elementwise work)."""

    def __init__(self, cin: int, cout: int, pool: bool = False, k: int = 3, stride: int = 1):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Net(nn.Module):
    """Built from a spec string of comma-separated tokens (applied in order, input 1x28x28):

    u        pixel_unshuffle(2): C*4 channels, H/2
    cN       conv3x3 -> BN -> ReLU with N output channels      (cNkK: kernel K)
    cNp      conv3x3 -> maxpool2 -> BN -> ReLU
    sN       conv3x3 stride 2 -> BN -> ReLU                   (sNkK: kernel K)
    p        maxpool2
    g        global max pool (then Linear); otherwise flatten -> Linear
    """

    def __init__(self, spec: str, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        c, size, gap = 1, 28, False
        for tok in spec.split(","):
            tok = tok.strip()
            if tok == "u":
                layers.append(nn.PixelUnshuffle(2))
                c, size = c * 4, size // 2
            elif tok == "p":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            elif tok == "g":
                gap = True
            elif tok[0] in "cs":
                body = tok[1:]
                pool = body.endswith("p")
                body = body.rstrip("p")
                k = 3
                if "k" in body:
                    body, ks = body.split("k")
                    k = int(ks)
                cout = int(body)
                stride = 2 if tok[0] == "s" else 1
                layers.append(ConvBN(c, cout, pool=pool, k=k, stride=stride))
                c = cout
                if stride == 2:
                    size = (size + 2 * (k // 2) - k) // 2 + 1
                if pool:
                    size //= 2
            else:
                raise ValueError(f"bad spec token {tok!r}")
        self.features = nn.Sequential(*layers)
        self.gap = gap
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c if gap else c * size * size, 10)

    def forward(self, x):
        x = self.features(x)
        x = torch.amax(x, dim=(2, 3)) if self.gap else torch.flatten(x, 1)
        return self.fc(self.drop(x))


MODELS = {
    "s8": "c8p,c16p,c32p",
    "s12": "c12p,c24p,c48p",
    "s16": "c16p,c32p,c64p",
    "s24": "c24p,c48p,c96p",
    "s32": "c32p,c64p,c128p",
    "s16g": "c16p,c32p,c64,g",
    "d16": "c16p,c32,c32p,c64p",
    # stride-2 / space-to-depth stems avoid the expensive 28x28 activations
    "t16": "s16,c32p,c64p",
    "t24": "s24,c48p,c96p",
    "t32": "s32,c64p,c128p",
    "t24k5": "s24k5,c48p,c96p",
    "u16": "u,c16,c32p,c64p",
    "u24": "u,c24,c48p,c96p",
    "u32": "u,c32,c64p,c128p",
    "u32b": "u,c32,c32p,c64p",
    "u48": "u,c48,c48p,c96p",
    "baseline": None,  # original project net, see build_model
}


# The original project's network, exactly as mnistctl ships it (`--arch seed`).
from mnistctl.models import DigitClassifier as Baseline  # noqa: E402


def build_model(name: str, dropout: float = 0.0) -> nn.Module:
    if name == "baseline":
        return Baseline()
    return Net(MODELS.get(name, name), dropout=dropout)


def conv_flops(model: nn.Module) -> int:
    """Forward multiply-adds per image (conv + linear), via hooks on one dummy forward."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    model.train(was)
    for h in hs:
        h.remove()
    return total[0]


# ----------------------------------------------------------------------------- noise monitor
def busy_cpu_s() -> float:
    """Machine-wide busy CPU seconds (user+nice+system+irq+softirq+steal) from /proc/stat (0 if unavailable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


class Noise:
    """CPU seconds used by *other* processes while this one ran (timings are noisy when this is large)."""

    def __init__(self):
        self.b0, self.p0, self.w0 = busy_cpu_s(), time.process_time(), time.perf_counter()

    def others(self) -> float:
        return max(0.0, (busy_cpu_s() - self.b0) - (time.process_time() - self.p0))


def wait_quiet(max_wait_s: float, window_s: float = 2.0, thresh: float = 0.15) -> None:
    """Wait (up to max_wait_s) until other processes use < thresh of a core over window_s (2-core box)."""
    t_end = time.perf_counter() + max_wait_s
    while True:
        n = Noise()
        time.sleep(window_s)
        o = n.others()
        if o < thresh * window_s or time.perf_counter() > t_end:
            if o >= thresh * window_s:
                print(f"  (still busy: others used {o:.1f} CPU-s in {window_s}s; starting anyway)", flush=True)
            return


# ----------------------------------------------------------------------------- training
def make_optimizer(model, args, steps_total):
    decay, no_decay = [], []
    for _n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}]
    if args.opt == "adamw":
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), foreach=True)
    elif args.opt == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True, foreach=True)
    else:
        raise ValueError(args.opt)
    if args.sched == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=args.lr,
            total_steps=steps_total,
            pct_start=args.warmup,
            anneal_strategy="linear" if args.anneal == "linear" else "cos",
            div_factor=args.div,
            final_div_factor=args.final_div,
            cycle_momentum=False,
        )
    elif args.sched == "const":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        raise ValueError(args.sched)
    return opt, sched


def augment(xf: torch.Tensor, args, gen: torch.Generator) -> torch.Tensor:
    if args.aug == "none":
        return xf
    if args.aug == "shift":
        return aug_shift(xf, args.shift, gen)
    if args.aug == "affine":
        return aug_affine(xf, args.rot, args.scale, args.shift, gen)
    raise ValueError(args.aug)


def prep_model_input(x, args):
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.inference_mode()
def evaluate(model, xte, yte, args, eval_bs=2000):
    model.eval()
    correct = 0
    for i in range(0, xte.shape[0], eval_bs):
        x = normalise(to_float(xte[i : i + eval_bs]))
        x = prep_model_input(x, args)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(x)
        correct += (out.argmax(1) == yte[i : i + eval_bs]).sum().item()
    model.train()
    return correct / xte.shape[0]


def run(args, data, seed: int) -> dict:
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    model = build_model(args.model, args.dropout)
    nparams = sum(p.numel() for p in model.parameters())
    macs = conv_flops(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = xtr.shape[0] if args.train_n <= 0 else args.train_n
    bs = args.batch_size
    steps_per_epoch = n // bs  # drop last partial batch
    opt, sched = make_optimizer(model, args, steps_per_epoch * args.epochs)
    crit = nn.CrossEntropyLoss(label_smoothing=args.ls)

    def make_step(net):
        def train_step(x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = net(x)
                loss = crit(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return train_step

    step_fn = make_step(model)
    compile_s = 0.0
    fwd_model = model
    if args.compile:
        t0 = time.perf_counter()
        model_c = torch.compile(model, mode=args.compile_mode)
        fwd_model = model_c
        step_fn = make_step(model_c)

        # warm-up compile on a real-size batch (train + eval shapes) then restore state
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        osd = opt.state_dict()
        xb = normalise(to_float(xtr[:bs]))
        step_fn(prep_model_input(xb, args), ytr[:bs])
        model.load_state_dict(sd)
        opt.load_state_dict(osd)
        opt.state.clear()
        evaluate(model_c, xte[:2000], yte[:2000], args)
        compile_s = time.perf_counter() - t0
        print(f"  compile warm-up {compile_s:.1f}s", flush=True)

    print(
        f"== {args.model} seed={seed} params={nparams} fwdMACs/img={macs / 1e6:.2f}M bs={bs} opt={args.opt} "
        f"lr={args.lr} wd={args.wd} ls={args.ls} aug={args.aug} epochs={args.epochs} threads={torch.get_num_threads()} "
        f"cl={args.channels_last} bf16={args.bf16} compile={args.compile}",
        flush=True,
    )
    t_start = time.perf_counter()
    noise = Noise()
    hist, t99 = [], None
    t_aug = 0.0
    for ep in range(args.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(xtr.shape[0], generator=gen)[:n]
        lsum = torch.zeros(())
        step_times = []
        for i in range(steps_per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            ta = time.perf_counter()
            x = to_float(xtr[idx])
            x = augment(x, args, gen)
            x = prep_model_input(normalise(x), args)
            t_aug += time.perf_counter() - ta
            loss = step_fn(x, ytr[idx])
            sched.step()
            if i % 50 == 0:
                lsum += loss.detach()
            step_times.append(time.perf_counter() - ta)
        t1 = time.perf_counter()
        step_times.sort()
        med_train = step_times[len(step_times) // 2] * steps_per_epoch
        p10_train = step_times[len(step_times) // 10] * steps_per_epoch  # ~uncontended estimate
        acc = evaluate(fwd_model, xte, yte, args)
        t2 = time.perf_counter()
        el = t2 - t_start
        if t99 is None and acc >= 0.99:
            t99 = el
        hist.append(
            {
                "epoch": ep + 1,
                "train_s": t1 - t0,
                "eval_s": t2 - t1,
                "acc": acc,
                "elapsed": el,
                "train_s_med": med_train,
                "train_s_p10": p10_train,
                "img_s": steps_per_epoch * bs / (t1 - t0),
            }
        )
        print(
            f"  ep{ep + 1:2d} train {t1 - t0:5.2f}s ({steps_per_epoch * bs / (t1 - t0):6.0f} img/s; "
            f"median-step est {med_train:5.2f}s, p10 {p10_train:5.2f}s) "
            f"eval {t2 - t1:4.2f}s "
            f"acc {acc * 100:6.2f}%  elapsed {el:6.1f}s  loss~{lsum.item() / math.ceil(steps_per_epoch / 50):.3f}",
            flush=True,
        )
    total = time.perf_counter() - t_start
    res = {
        "model": args.model,
        "seed": seed,
        "params": nparams,
        "macs": macs,
        "bs": bs,
        "opt": args.opt,
        "lr": args.lr,
        "wd": args.wd,
        "ls": args.ls,
        "aug": args.aug,
        "epochs": args.epochs,
        "final_acc": hist[-1]["acc"],
        "best_acc": max(h["acc"] for h in hist),
        "t99": t99,
        "total_s": total,
        "compile_s": compile_s,
        "aug_s": t_aug,
        "img_s": sum(h["img_s"] for h in hist) / len(hist),
        "train_s_ep": sum(h["train_s"] for h in hist) / len(hist),
        "eval_s_ep": sum(h["eval_s"] for h in hist) / len(hist),
        "hist": hist,
        "train_s_med_ep": sum(h["train_s_med"] for h in hist) / len(hist),
        "train_s_p10_ep": sum(h["train_s_p10"] for h in hist) / len(hist),
        "cpu_s": time.process_time(),
        "others_cpu_s": noise.others(),
        "cl": args.channels_last,
        "bf16": args.bf16,
        "compile": args.compile,
        "tag": args.tag,
    }
    print(
        f"  RESULT {args.model} seed={seed} final {res['final_acc'] * 100:.2f}% best {res['best_acc'] * 100:.2f}% "
        f"t99={t99 if t99 is None else round(t99, 1)}s total {total:.1f}s (+compile {compile_s:.1f}s) "
        f"img/s {res['img_s']:.0f} (median-step train est {res['train_s_med_ep']:.2f}s/ep, "
        f"p10 {res['train_s_p10_ep']:.2f}s/ep) aug {t_aug:.1f}s "
        f"cpu {res['cpu_s']:.0f}s; other processes used {res['others_cpu_s']:.1f} CPU-s meanwhile",
        flush=True,
    )
    return res


# ----------------------------------------------------------------------------- profiling
def profile(args, data, nb: int = 80):
    xtr, ytr, xte, yte = data
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(args.model, args.dropout)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    bs = args.batch_size
    opt, sched = make_optimizer(model, args, 10_000)
    crit = nn.CrossEntropyLoss(label_smoothing=args.ls)
    fwd_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    tm = {"data": 0.0, "aug": 0.0, "fwd": 0.0, "bwd": 0.0, "opt": 0.0}
    steps = []
    perm = torch.randperm(60000, generator=gen)
    noise = Noise()
    for i in range(nb + 5):
        if i == 5:
            tm = {k: 0.0 for k in tm}
            t_all = time.perf_counter()
        idx = perm[i * bs : (i + 1) * bs]
        t0 = time.perf_counter()
        x = to_float(xtr[idx])
        t1 = time.perf_counter()
        x = augment(x, args, gen)
        x = prep_model_input(normalise(x), args)
        t2 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = fwd_model(x)
            loss = crit(out.float(), ytr[idx])
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        sched.step()
        t5 = time.perf_counter()
        for k, a, b in (("data", t0, t1), ("aug", t1, t2), ("fwd", t2, t3), ("bwd", t3, t4), ("opt", t4, t5)):
            tm[k] += b - a
        if i >= 5:
            steps.append(t5 - t0)
    wall = time.perf_counter() - t_all
    ims = nb * bs
    steps.sort()
    med = steps[len(steps) // 2]
    t0 = time.perf_counter()
    evaluate(fwd_model, xte, yte, args)
    te = time.perf_counter() - t0
    macs = conv_flops(build_model(args.model))
    print(
        f"PROFILE {args.model} bs={bs} aug={args.aug} cl={args.channels_last} bf16={args.bf16} "
        f"compile={args.compile} threads={torch.get_num_threads()} MACs={macs / 1e6:.2f}M: {ims / wall:.0f} img/s "
        f"(-> {60000 / (ims / wall):.1f}s/epoch; median step {med * 1000:.1f}ms -> {bs / med:.0f} img/s, "
        f"{60000 / bs * med:.1f}s/epoch); mean per-batch ms: "
        + " ".join(f"{k}={v / nb * 1000:.2f}" for k, v in tm.items())
        + f"; eval10k {te:.2f}s; others used {noise.others():.1f} CPU-s",
        flush=True,
    )


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--list", action="store_true", help="list models with params / MACs and exit")
    ap.add_argument("--profile", action="store_true", help="time data/aug/fwd/bwd/opt per batch and exit")
    ap.add_argument("--model", default="s16", help="a name from --list or a spec string, e.g. 'u,c32,c64p,c128p'")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="screening: 3 epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-n", type=int, default=0, help="use only first N of each epoch's permutation")
    ap.add_argument("--opt", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=1e-2)
    ap.add_argument("--sched", default="onecycle", choices=["onecycle", "const"])
    ap.add_argument("--warmup", type=float, default=0.2, help="OneCycle pct_start")
    ap.add_argument("--anneal", default="linear", choices=["linear", "cos"])
    ap.add_argument("--div", type=float, default=10.0)
    ap.add_argument("--final-div", type=float, default=100.0)
    ap.add_argument("--ls", type=float, default=0.0, help="label smoothing")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--aug", default="shift", choices=["none", "shift", "affine"])
    ap.add_argument("--shift", type=float, default=2, help="max shift in px (int for --aug shift)")
    ap.add_argument("--rot", type=float, default=10.0)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default=None)
    ap.add_argument("--tag", default="")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each run wait up to this many s for other processes to go quiet (0: don't)",
    )
    ap.add_argument("--json", default=None, help="append results as JSON lines to this file")
    args = ap.parse_args(argv)
    if args.aug == "shift":
        args.shift = int(args.shift)
    if args.quick:
        args.epochs = 3
    torch.set_num_threads(args.threads)

    if args.list:
        for name in MODELS:
            m = build_model(name)
            print(f"{name:9s} params={sum(p.numel() for p in m.parameters()):8d} MACs/img={conv_flops(m) / 1e6:6.2f}M")
        return

    t0 = time.perf_counter()
    data = load_mnist(args.data)
    print(
        f"loaded MNIST in {time.perf_counter() - t0:.2f}s: train {tuple(data[0].shape)} test {tuple(data[2].shape)}",
        flush=True,
    )
    if args.profile:
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        profile(args, data)
        return
    seeds = args.seeds if args.seeds else [args.seed]
    results = []
    for s in seeds:
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        r = run(args, data, s)
        results.append(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    if len(results) > 1:
        accs = sorted(r["final_acc"] for r in results)
        tots = sorted(r["total_s"] for r in results)
        t99s = [r["t99"] for r in results]
        print(
            f"SUMMARY {args.model}: final acc per seed {[round(r['final_acc'] * 100, 2) for r in results]} "
            f"median {accs[len(accs) // 2] * 100:.2f}%  total s {[round(t, 1) for t in tots]} "
            f"t99 {[None if t is None else round(t, 1) for t in t99s]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
