"""Evaluate a checkpoint on a repvit-mm config's test set (top-1/top-5, COCO AP or mIoU, as configured).

python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--deploy] [--out RESULTS.pkl] [--show-dir DIR]
                                       [--cfg-options k=v ...] [--strict-data]
                                       [--launcher none|pytorch|slurm]

CHECKPOINT may be an ONNX file written by tools/export_onnx.py (a classifier or a whole segmentor, fp32 or
INT8; a whole Mask R-CNN): the backend is chosen by the suffix, and the config's test set and evaluator
run through ONNX Runtime.
"""

import json
import numbers

from cli import ArgumentParser, UsageError, add_cfg_options, cfg_options, existing_file, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Test (evaluate) a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file, or an exported .onnx model')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--deploy', action='store_true', help='evaluate the reparameterized (BatchNorm-fused) model')
    parser.add_argument('--out', help='also dump raw predictions to this .pkl file')
    parser.add_argument('--show-dir', help='also draw every prediction into this folder')
    add_cfg_options(parser)
    parser.add_argument(
        '--strict-data',
        action='store_true',
        help='stop on data the loaders would partly drop (e.g. invalid COCO boxes) instead of warning',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    existing_file(args.checkpoint, 'checkpoint')
    onnx = args.checkpoint.endswith('.onnx')
    if onnx and args.deploy:
        raise UsageError('--deploy fuses a PyTorch checkpoint; an exported .onnx model is already fused')
    options = cfg_options(args.cfg_options)
    from repvit_mm.apis import load_config, prepare_test_cfg, test

    cfg = load_config(args.config, options)
    if onnx:
        from repvit_mm.deploy.ort_model import onnx_test_cfg

        cfg = onnx_test_cfg(cfg, args.checkpoint)
    cfg = prepare_test_cfg(
        cfg,
        None if onnx else args.checkpoint,
        work_dir=args.work_dir,
        launcher=args.launcher,
        deploy=args.deploy,
        out=args.out,
        show_dir=args.show_dir,
        strict_data=args.strict_data,
    )
    metrics = test(cfg)
    print('metrics: ' + json.dumps({k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, numbers.Real)}))


if __name__ == '__main__':
    run_cli(main)
