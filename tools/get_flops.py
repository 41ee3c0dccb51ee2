"""Parameters and MACs of any config's model, unfused (training) and fused (deploy).

    python tools/get_flops.py CONFIG [--shape H W] [--backbone-only]

Classifier: the whole classifier at 224x224 (the fused numbers are the paper's convention);
``--backbone-only``: the backbone at 512x512; detector / segmentor: the full model at 800x1344 / 512x512.
Counted with mmengine's analyzer (one multiply-add = one MAC).
"""

from cli import ArgumentParser, add_shape_argument, existing_file, parse_shape, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Count parameters and MACs')
    parser.add_argument('config', help='config file')
    add_shape_argument(parser, 'by task: 224 classifier, 512 backbone, 800x1344 detector, 512 segmentor')
    parser.add_argument('--backbone-only', action='store_true', help='count the backbone alone')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    import repvit_mm  # noqa: F401
    from repvit_mm.deploy import model_complexity
    from repvit_mm.deploy.flops import format_table

    result = model_complexity(args.config, shape=parse_shape(args.shape, None), backbone_only=args.backbone_only)
    print(format_table(result))


if __name__ == '__main__':
    run_cli(main)
