"""Inference (default) or training (``--train``) speed of a config's model, next to timm's RepViT.

    python tools/benchmark.py CONFIG [CHECKPOINT] [--shape H W] [--batch-sizes 1 32] [--repeats 20]
                              [--warmup 3] [--device cpu|cuda] [--threads N] [--paths ...] [--json OUT]
    python tools/benchmark.py CONFIG --train [--batch-size 32] [--shape H W] [--iters 10] [--warmup 2]
                              [--device cpu|cuda] [--threads N] [--paths ...] [--json OUT]

Inference rows: unfused, fused, fused_channels_last, torch_compile, onnxruntime, onnxruntime_int8 and
timm_fused (the reference), at each batch size: median time per batch and its spread (25th-75th
percentile), images/s, GFLOP/s and the speed relative to timm's fused model. Without a checkpoint the
weights are random (speed does not depend on them). Segmentor configs are timed whole (backbone, neck,
head, resize), Mask R-CNN configs whole at batch 1 (as tools/export_onnx.py exports them); --backbone-only:
the backbone.

Training rows (``--train``, synthetic batches, ``--iters`` timed steps per row): timm_bare (the reference),
bare, authors_loop (the RepViT authors' own training step), runner, runner_channels_last, runner_compile
and, on a GPU, runner_amp; see :mod:`repvit_mm.deploy.train_benchmark`. Detector/segmentor configs get the runner rows.
"""

from cli import ArgumentParser, UsageError, add_shape_argument, existing_file, parse_shape, run_cli

# The rows of repvit_mm.deploy.benchmark.PATHS and repvit_mm.deploy.train_benchmark.TRAIN_PATHS (a test checks
# they agree), spelled here so that a bad option is answered before the library is imported.
PATHS = (
    'unfused',
    'fused',
    'fused_channels_last',
    'torch_compile',
    'onnxruntime',
    'onnxruntime_int8',
    'timm_fused',
    'timm_onnxruntime',
)
TRAIN_PATHS = (
    'timm_bare',
    'bare',
    'authors_loop',
    'runner',
    'runner_channels_last',
    'runner_compile',
    'runner_amp',
)


def parse_args(argv=None):
    parser = ArgumentParser(description='Benchmark RepViT inference paths, or training steps (--train)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (optional: random weights time the same)')
    add_shape_argument(parser, '224')
    parser.add_argument('--train', action='store_true', help='time training steps instead of inference')
    parser.add_argument(
        '--batch-sizes', type=int, nargs='+', default=None, metavar='B', help='inference batch sizes (default 1 32)'
    )
    parser.add_argument('--batch-size', type=int, default=None, help='--train: batch size (default 32)')
    parser.add_argument('--repeats', type=int, default=None, help='timed runs per path and batch size (default 20)')
    parser.add_argument('--iters', type=int, default=None, help='--train: timed steps per path (default 10)')
    parser.add_argument(
        '--warmup', type=int, default=None, help='untimed runs before timing (default 3, --train: 2 steps)'
    )
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    parser.add_argument(
        '--paths',
        nargs='+',
        choices=PATHS + TRAIN_PATHS,
        default=None,
        metavar='PATH',
        help=f'what to time (default all: {" ".join(PATHS)}; with --train, those of '
        f'{" ".join(TRAIN_PATHS)} the config and device allow)',
    )
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='time the backbone of a classifier, detector or segmentor (not the whole model)',
    )
    parser.add_argument('--json', help='also write every row to this JSON file')
    parser.add_argument('--force', action='store_true', help='replace the --json file if it exists')
    return parser.parse_args(argv)


def _check_mode(args) -> None:
    """Options of the other mode are an error, not silently ignored."""
    if args.train:
        given = (
            ('CHECKPOINT', args.checkpoint),
            ('--batch-sizes', args.batch_sizes),
            ('--repeats', args.repeats),
            ('--backbone-only', args.backbone_only or None),
        )
        allowed = TRAIN_PATHS
    else:
        given = (('--batch-size', args.batch_size), ('--iters', args.iters))
        allowed = PATHS
    wrong = [flag for flag, value in given if value is not None]
    if wrong:
        mode = 'training (--train)' if args.train else 'inference'
        raise UsageError(f'{", ".join(wrong)}: not an option of the {mode} benchmark')
    other = [p for p in args.paths or () if p not in allowed]
    if other:
        raise UsageError(
            f'--paths {" ".join(other)}: not a path of the {"training" if args.train else "inference"} '
            f'benchmark (choose from {" ".join(allowed)})'
        )


def main(argv=None):
    args = parse_args(argv)
    _check_mode(args)
    existing_file(args.config, 'config file')
    if args.checkpoint:
        existing_file(args.checkpoint, 'checkpoint')
    shape = parse_shape(args.shape, (224, 224))
    import json
    import sys

    import repvit_mm  # noqa: F401
    from repvit_mm.deploy import benchmark
    from repvit_mm.deploy.benchmark import format_table
    from repvit_mm.utils.outputs import atomic_output, check_output

    json_path = check_output(args.json, args.force, suffixes=('.json',)) if args.json else None
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.train:
        from repvit_mm.deploy.train_benchmark import format_train_table, train_benchmark

        result = train_benchmark(
            args.config,
            shape=shape,
            batch_size=32 if args.batch_size is None else args.batch_size,
            repeats=10 if args.iters is None else args.iters,
            warmup=2 if args.warmup is None else args.warmup,
            device=args.device,
            threads=args.threads,
            paths=tuple(args.paths) if args.paths else None,
            progress=say,
        )
        print(format_train_table(result))
    else:
        result = benchmark(
            args.config,
            args.checkpoint,
            shape=shape,
            batch_sizes=tuple(args.batch_sizes or (1, 32)),
            repeats=20 if args.repeats is None else args.repeats,
            warmup=3 if args.warmup is None else args.warmup,
            device=args.device,
            threads=args.threads,
            paths=tuple(args.paths or PATHS),
            backbone_only=args.backbone_only,
            progress=say,
        )
        print(format_table(result))
    if json_path is not None:
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        print(f'json: {json_path}')


if __name__ == '__main__':
    run_cli(main)
