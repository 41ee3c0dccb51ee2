"""Export a fused classifier, whole segmentor, whole Mask R-CNN or backbone (feature maps) to ONNX.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W] [--backbone-only]
                                [--output logits|labels] [--int8 [--calibration-images N]
                                [--int8-exclude NODE ...] [--int8-scope features|all-but-rpn|all]] [--opset N]
                                [--exporter torchscript|dynamo]
                                [--plain-se] [--cfg-options k=v ...] [--force]

The batch axis is dynamic; height and width are fixed (default: the classifier's test crop, the
segmentor's training crop). The input is the normalised image (mean/std/channel order in the file's
metadata). A segmentor exports backbone + neck + decode head + the resize to the input size: class scores
(``--output logits``) or the label map (``--output labels``). A Mask R-CNN exports whole (one image of a
fixed size in; boxes, scores, labels and 28x28 masks of a fixed number of detections out) or its backbone
(``--backbone-only``). The file is checked with ONNX Runtime against the PyTorch model and written only if
they agree. ``--int8`` then quantizes it statically for ONNX Runtime, calibrated on N training images; of
a whole detector, the backbone, FPN and RoI box and mask heads (``--int8-scope``: ``features`` the
backbone and FPN only, ``all`` the RPN head too); RoIAlign, NMS and the box decoding stay float.
"""

from cli import (
    ArgumentParser,
    UsageError,
    add_cfg_options,
    add_export_arguments,
    cfg_options,
    existing_file,
    export_shape,
    run_cli,
)


def parse_args(argv=None):
    parser = ArgumentParser(description='Export a fused RepViT model to ONNX')
    add_export_arguments(parser, 'output .onnx file')
    parser.add_argument(
        '--output',
        choices=['logits', 'labels'],
        default='logits',
        help='segmentor: per-pixel class scores (N, C, H, W) or the label map (N, H, W) (default logits)',
    )
    parser.add_argument(
        '--int8',
        action='store_true',
        help='quantize to INT8 for ONNX Runtime (static, QDQ, per-channel weights), calibrated on training images',
    )
    parser.add_argument(
        '--calibration-images',
        type=int,
        default=None,
        metavar='N',
        help='--int8: images of the training set to calibrate on (default 64)',
    )
    parser.add_argument(
        '--int8-exclude', nargs='+', default=(), metavar='NODE', help='--int8: ONNX node names to keep in float'
    )
    parser.add_argument(
        '--int8-scope',
        choices=['features', 'all-but-rpn', 'all'],
        default=None,
        help='--int8 of a whole detector: quantize the backbone and FPN (features), also the RoI box and mask '
        'heads (all-but-rpn, the default) or also the RPN head (all)',
    )
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
    add_cfg_options(parser)  # e.g. the training set's data_root, which --int8 calibrates on
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.int8 and (args.calibration_images is not None or args.int8_exclude or args.int8_scope):
        raise UsageError('--calibration-images, --int8-exclude and --int8-scope need --int8')
    if args.calibration_images is not None and args.calibration_images < 1:
        raise UsageError(f'--calibration-images must be at least 1, got {args.calibration_images}')
    existing_file(args.config, 'config file')
    existing_file(args.checkpoint, 'checkpoint')
    shape = export_shape(args)
    options = cfg_options(args.cfg_options)
    import repvit_mm  # noqa: F401
    from repvit_mm.apis import load_config
    from repvit_mm.deploy import export_onnx

    info = export_onnx(
        load_config(args.config, options) if options else args.config,
        args.checkpoint,
        args.out,
        shape=shape,
        backbone_only=args.backbone_only,
        output=args.output,
        opset=args.opset,
        exporter=args.exporter,
        blocked_layout=not args.plain_se,
        force=args.force,
        int8=args.int8,
        calibration_images=64 if args.calibration_images is None else args.calibration_images,
        exclude_nodes=tuple(args.int8_exclude),
        int8_scope=args.int8_scope,
    )
    h, w = info['shape']
    det = info.get('detections')  # a whole detector: one image in, a fixed number of detections out
    outputs = ', '.join(
        f'{name} [{", ".join(map(str, shape_ if det else ["N", *shape_[1:]]))}]'
        for name, shape_ in info['outputs'].items()
    )
    print(f'input: input [{1 if det else "N"}, 3, {h}, {w}]; outputs: {outputs}')
    if det:
        iou = 'n/a' if det['min_iou'] is None else f'{det["min_iou"]:.4f}'
        print(
            f'onnxruntime vs pytorch: {det["matched"]} of {det["expected"]} detections matched '
            f'(same label, IoU >= 0.99; lowest IoU {iou}) on a random image'
        )
    elif 'label_agreement' in info:
        print(
            f'onnxruntime vs pytorch labels agree on {info["label_agreement"]:.4%} of pixels '
            f'(batch {info["check_batch"]})'
        )
    else:
        print(f'onnxruntime vs pytorch max abs diff: {info["max_abs_diff"]:.3g} (batch {info["check_batch"]})')
    q = info.get('int8')
    excluded = f', kept in float: {", ".join(q["excluded"])}' if q and q['excluded'] else ''
    if q and det:
        d = q['detections']
        print(
            f'int8 ({q["scope"]}: {len(q["quantized_nodes"])} layers with int8 weights): calibrated on '
            f"{q['calibration_images']} training images; {d['matched']} of the float model's {d['expected']} "
            f'detections on them matched by int8 ones (same label, IoU >= {d["min_iou"]}; int8 gave '
            f'{d["got"]}){excluded}'
        )
    elif q:
        print(
            f'int8: calibrated on {q["calibration_images"]} training images; int8 vs float agree on '
            f'{q["agreement"]:.2%} of their {q["agreement_of"]}{excluded}'
        )
    print(f'onnx model: {info["out"]}')


if __name__ == '__main__':
    run_cli(main)
