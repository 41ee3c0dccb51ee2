"""Export a checkpoint's fused classifier (logits) or backbone (multi-scale features) to ONNX.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W] [--backbone-only] [--opset N]
                                [--exporter torchscript|dynamo] [--plain-se] [--force]

The batch axis is dynamic. The input is the normalised image (mean/std/channel order in the file's
metadata). The file is checked with ONNX Runtime against the PyTorch model and written only if they agree;
the largest absolute difference is printed. Detector/segmentor configs export their backbone.
"""

from cli import ArgumentParser, add_export_arguments, existing_file, export_shape, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Export a fused RepViT model to ONNX')
    add_export_arguments(parser, 'output .onnx file')
    parser.add_argument(
        '--opset', type=int, default=None, help='ONNX opset (default 17 with the torchscript exporter, 18 with dynamo)'
    )
    parser.add_argument(
        '--exporter',
        choices=['torchscript', 'dynamo'],
        default='torchscript',
        help="torch's ONNX exporter (default torchscript: faster under ONNX Runtime)",
    )
    parser.add_argument(
        '--plain-se',
        action='store_true',
        help='export squeeze-and-excitation as ReduceMean + broadcast Mul instead of the '
        'equivalent form that keeps ONNX Runtime in its blocked CPU layout',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    existing_file(args.checkpoint, 'checkpoint')
    shape = export_shape(args)
    import repvit_mm  # noqa: F401
    from repvit_mm.deploy import export_onnx

    info = export_onnx(
        args.config,
        args.checkpoint,
        args.out,
        shape=shape,
        backbone_only=args.backbone_only,
        opset=args.opset,
        exporter=args.exporter,
        blocked_layout=not args.plain_se,
        force=args.force,
    )
    outputs = ', '.join(f'{name} {["N", *shape_[1:]]}' for name, shape_ in info['outputs'].items())
    print(f'input: input [N, 3, {shape[0]}, {shape[1]}]; outputs: {outputs}')
    print(f'onnxruntime vs pytorch max abs diff: {info["max_abs_diff"]:.3g} (batch {info["check_batch"]})')
    print(f'onnx model: {info["out"]}')


if __name__ == '__main__':
    run_cli(main)
