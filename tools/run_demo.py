"""The repvit-mm demo on the embedded Shapes data (no download): ``make demo`` runs it.

    python tools/run_demo.py [--out work_dirs/demo] [--quick]

Generates the Shapes data, trains a RepViT-M0.9 classifier and reports where its checkpoint and log are.
``--quick`` runs the same steps with a handful of iterations (used by the tests).
"""
import argparse

from repvit_mm.apis import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Run the repvit-mm demo on the embedded Shapes data')
    parser.add_argument('--out', default='work_dirs/demo', help='where data, checkpoints and pictures go')
    parser.add_argument('--quick', action='store_true', help='a few iterations per step (smoke run)')
    return parser.parse_args(argv)


def main(argv=None):
    from repvit_mm.demo import run_demo
    args = parse_args(argv)
    run_demo(args.out, quick=args.quick)


if __name__ == '__main__':
    run_cli(main)
