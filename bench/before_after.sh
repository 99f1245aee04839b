#!/usr/bin/env bash
# The same benchmarks on an older commit and on this checkout, interleaved round by round so that the
# machine's slow and fast spells fall on both alike: what a refactor cost or saved.
#
#   bash bench/before_after.sh OLD_REV [ROUNDS] [EXTRA_TRAIN_OPTIONS]
#
# OLD_REV is checked out into a temporary git worktree and run with PYTHONPATH pointing at it (same venv,
# same torch). bench/train.py's "original" row trains the same recipe on both sides (like for like); its
# "default" row trains each side's own default, with EXTRA_TRAIN_OPTIONS on this checkout's side. eval runs
# in fp32 on the old side, and in fp32 and in the default precision on this one. Needs MNIST in the data
# directory and MNISTCTL_MIRROR for bench/predict.py. Prints each benchmark's output, prefixed with old/new.
set -euo pipefail
old_rev=$1
rounds=${2:-2}
extra=${3:-}
new=$PWD
work=$(mktemp -d)
git worktree add --detach "$work/old" "$old_rev" >/dev/null
trap 'git worktree remove --force "$work/old"' EXIT
old=$work/old
py=${PYTHON:-python}
mnistctl=$(command -v mnistctl)

side() {  # side old|new COMMAND...: run COMMAND with that side's code, its output prefixed
    local name=$1 dir
    shift
    dir=$([ "$name" = old ] && echo "$old" || echo "$new")
    (cd "$dir" && PYTHONPATH=$dir "$@" 2>&1 | sed "s/^/$name: /")
}

echo "old: $(git rev-parse --short "$old_rev")  new: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (+ changes)')"
# One model for eval, predict and photos, trained by the old code (both sides read it).
side old "$mnistctl" train --epochs 10 --seed 0 -o "$work/model.pt" --json -q | tail -1
for round in $(seq "$rounds"); do
    echo "== round $round"
    side old "$py" bench/train.py --epochs 1
    side new "$py" bench/train.py --epochs 1 --extra="$extra"
    for _ in 1 2 3; do
        side old "$mnistctl" eval -m "$work/model.pt" --json | grep -o '"seconds": [0-9.]*' | sed 's/^/old eval: /'
    done
    for precision in --no-amp ""; do  # the old code evaluated in fp32; the new one's default follows the CPU
        for _ in 1 2 3; do
            side new "$mnistctl" eval -m "$work/model.pt" --json $precision | grep -o '"seconds": [0-9.]*' |
                sed "s/^/new eval: /; s/$/ (${precision:-default precision})/"
        done
    done
    side old "$py" bench/predict.py -m "$work/model.pt" --runs 5
    side new "$py" bench/predict.py -m "$work/model.pt" --runs 5
done
side old "$py" bench/photos.py -m "$work/model.pt" -n 2000
side new "$py" bench/photos.py -m "$work/model.pt" -n 2000
