"""Evaluate a checkpoint on a repvit-mm config's test set (top-1/top-5, COCO AP or mIoU, as configured).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--deploy] [--out RESULTS.pkl] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
"""
import argparse
import json
import numbers

from mmengine.config import DictAction

import repvit_mm  # noqa: F401  (registers modules, safe checkpoint loading)
from repvit_mm.apis import load_config, prepare_test_cfg, run_cli, test


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--deploy', action='store_true',
                        help='evaluate the reparameterized (BatchNorm-fused) model')
    parser.add_argument('--out', help='also dump raw predictions to this .pkl file')
    parser.add_argument('--show-dir', help='also draw every prediction into this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings, e.g. test_dataloader.batch_size=32')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    cfg = prepare_test_cfg(cfg, args.checkpoint, work_dir=args.work_dir, launcher=args.launcher,
                           deploy=args.deploy, out=args.out, show_dir=args.show_dir)
    metrics = test(cfg)
    print('metrics: ' + json.dumps({k: round(float(v), 4) for k, v in metrics.items()
                                    if isinstance(v, numbers.Real)}))


if __name__ == '__main__':
    run_cli(main)
