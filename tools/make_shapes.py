#!/usr/bin/env python
"""Write the synthetic Shapes dataset (ImageNet, COCO and ADE20K layouts) under OUT.

    python tools/make_shapes.py data/shapes
    python tools/make_shapes.py data/shapes --formats coco ade20k --num-train 200 --size 256 --seed 1

--num-train/--num-val/--size apply to every chosen format (for imagenet the counts are per class);
left out, each format keeps its default (repvit_mm.datasets.DEFAULT_SPECS). Same seed, same bytes.
"""

from __future__ import annotations

from argparse import RawDescriptionHelpFormatter
from pathlib import Path

from cli import ArgumentParser, UsageError, run_cli

IMAGE_SUFFIXES = ('.jpg', '.jpeg')
FORMATS = ('imagenet', 'coco', 'ade20k')  # repvit_mm.datasets.SHAPES_FORMATS


def parse_args(argv: list[str] | None = None):
    parser = ArgumentParser(prog='make_shapes.py', description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument('out', type=Path, help='output root; each format goes to OUT/<format>')
    parser.add_argument(
        '--formats', nargs='+', choices=FORMATS, default=list(FORMATS), help='formats to write (default: all)'
    )
    parser.add_argument('--num-train', type=int, help='training images (imagenet: per class)')
    parser.add_argument('--num-val', type=int, help='validation images (imagenet: per class)')
    parser.add_argument('--size', type=int, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--force', action='store_true', help='replace non-empty format directories')
    return parser.parse_args(argv)


def describe(fmt: str, path: Path) -> str:
    images = sum(1 for p in path.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    return f'{fmt:8s} -> {path} ({images} images)'


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from repvit_mm.apis import make_shapes

    try:
        written = make_shapes(
            args.out,
            formats=args.formats,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.size,
            seed=args.seed,
            overwrite=args.force,
        )
    except ValueError as err:  # out-of-range values; FileExistsError is reported by run_cli as is
        raise UsageError(str(err)) from None
    for fmt, path in written.items():
        print(describe(fmt, path))


if __name__ == '__main__':
    run_cli(main)
