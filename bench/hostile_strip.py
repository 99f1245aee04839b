"""CPU time of finding the digits on a megapixel strip of thousands of marks (hostile input for `--multi`).

    python bench/hostile_strip.py            # 33000×30 px: 2,199 strokes as tall as a digit, each with a bar

Each mark is a stroke as tall as a digit with a bar at its top drawn apart (as a 5's can be), so the
segmentation has thousands of groups to compare with one another, and thousands of bars to place.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mnistctl.imaging.segment import segment_choices


def strip(width: int, period: int) -> np.ndarray:
    gray = np.full((30, width), 255, np.uint8)
    for x in range(4, width - period, period):
        gray[5:27, x : x + 2] = 0  # a stroke as tall as a digit
        gray[5:9, x + 3 : x + 11] = 0  # a bar at its top just right of it (8 px: not dust on so long a page), and
        # 4 px to the next mark: more than JOIN_GAP apart, so the line networks' reading does not join them all
    return gray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=33000)
    parser.add_argument("--period", type=int, default=15, help="pixels from one mark to the next")
    args = parser.parse_args()
    gray = strip(args.width, args.period)
    for lines in (False, True):
        start = time.process_time()
        groups = segment_choices(gray, lines=lines)
        took = time.process_time() - start
        print(f"segment_choices(lines={lines}): {len(groups)} groups, {took:.2f} s CPU")


if __name__ == "__main__":
    main()
