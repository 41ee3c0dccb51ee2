"""Inference speed of a config's model on every deploy path, next to timm's fused RepViT.

    python tools/benchmark.py CONFIG [CHECKPOINT] [--shape H W] [--batch-sizes 1 32] [--repeats 20]
                              [--warmup 3] [--device cpu|cuda] [--threads N] [--paths ...] [--json OUT]

Rows: unfused, fused, fused_channels_last, torch_compile, onnxruntime and timm_fused (the reference), at
each batch size: median time per batch and its spread (25th-75th percentile), images/s, GFLOP/s and the
speed relative to timm's fused model. Without a checkpoint the weights are random (speed does not depend
on them). Detector/segmentor configs are timed as their backbone.
"""
import argparse

from repvit_mm.apis import run_cli
from repvit_mm.deploy.cli import add_shape_argument, parse_shape


def parse_args(argv=None):
    from repvit_mm.deploy.benchmark import PATHS
    parser = argparse.ArgumentParser(description='Benchmark RepViT inference paths')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (optional: random weights time the same)')
    add_shape_argument(parser, '224')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 32], metavar='B')
    parser.add_argument('--repeats', type=int, default=20, help='timed runs per path and batch size')
    parser.add_argument('--warmup', type=int, default=3, help='untimed runs before timing')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    parser.add_argument('--paths', nargs='+', choices=PATHS, default=list(PATHS), metavar='PATH',
                        help=f'what to time (default all: {" ".join(PATHS)})')
    parser.add_argument('--backbone-only', action='store_true', help='time the backbone of a classifier')
    parser.add_argument('--json', help='also write every row to this JSON file')
    parser.add_argument('--force', action='store_true', help='replace the --json file if it exists')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import json
    import sys

    import repvit_mm  # noqa: F401
    from repvit_mm.deploy import atomic_output, benchmark, check_output
    from repvit_mm.deploy.benchmark import format_table

    json_path = check_output(args.json, args.force, suffixes=('.json',)) if args.json else None
    result = benchmark(args.config, args.checkpoint, shape=parse_shape(args.shape, (224, 224)),
                       batch_sizes=tuple(args.batch_sizes), repeats=args.repeats, warmup=args.warmup,
                       device=args.device, threads=args.threads, paths=tuple(args.paths),
                       backbone_only=args.backbone_only, progress=lambda m: print(m, file=sys.stderr))
    print(format_table(result))
    if json_path is not None:
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        print(f'json: {json_path}')


if __name__ == '__main__':
    run_cli(main)
