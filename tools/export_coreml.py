"""Export a fused classifier, whole segmentor, detector (up to its RPN head) or backbone to Core ML (.mlpackage).

    python tools/export_coreml.py CONFIG CHECKPOINT OUT.mlpackage [--shape H W] [--backbone-only]
                                  [--precision float16|float32] [--force]

Input: an image of a fixed size (normalisation built in; default the classifier's test crop, the
segmentor's training crop, the detector's test size). Classifiers output class probabilities (with the
class labels when known); segmentors the label map ``labels`` (1, H, W) (class names in the metadata);
a Mask R-CNN its FPN maps and RPN head outputs per level (``fpn_p2..``, ``rpn_cls_p2..``,
``rpn_reg_p2..``); ``--backbone-only`` outputs the feature maps feat0..feat3 (strides 4 to 32).
Converting works on Linux; predictions (and the check against PyTorch) need macOS.
"""

from cli import ArgumentParser, add_export_arguments, existing_file, export_shape, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Export a fused RepViT model to Core ML')
    add_export_arguments(parser, 'output .mlpackage')
    parser.add_argument(
        '--precision',
        choices=['float16', 'float32'],
        default='float16',
        help='compute precision of the ML Program (default float16, as on the Neural Engine)',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    existing_file(args.checkpoint, 'checkpoint')
    shape = export_shape(args)
    import repvit_mm  # noqa: F401
    from repvit_mm.deploy import export_coreml

    info = export_coreml(
        args.config,
        args.checkpoint,
        args.out,
        shape=shape,
        backbone_only=args.backbone_only,
        precision=args.precision,
        force=args.force,
    )
    outputs = ', '.join(f'{name} {shape_}' for name, shape_ in info['outputs'].items())
    labels = f' ({len(info["classes"])} class labels)' if info['classes'] else ''
    h, w = info['shape']
    print(f'input: image {w}x{h}; outputs: {outputs}{labels}')
    if 'label_agreement' in info:
        print(f'core ml vs pytorch labels agree on {info["label_agreement"]:.4%} of pixels')
    elif 'max_abs_diff' in info:
        print(f'core ml vs pytorch max abs diff: {info["max_abs_diff"]:.3g}')
    else:
        print(f'prediction check {info["prediction_check"]}')
    print(f'core ml model: {info["out"]}')


if __name__ == '__main__':
    run_cli(main)
