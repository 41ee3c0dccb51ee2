"""Draw a config's dataset samples as the model sees them (after the pipeline) with their labels: the
class name, the boxes and masks, or the segmentation colours (classification, detection, segmentation).

    python tools/analysis_tools/browse_dataset.py CONFIG --output-dir DIR [--phase train|val|test]
                                                  [--show-number N] [--cfg-options k=v ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: the shared command-line helpers
from cli import ArgumentParser, add_cfg_options, cfg_options, existing_file, run_cli  # noqa: E402


def parse_args(argv=None):
    parser = ArgumentParser(description='Draw dataset samples with their labels')
    parser.add_argument('config', help='config file')
    parser.add_argument('--output-dir', '-o', required=True, help='folder the pictures go to (made if missing)')
    parser.add_argument(
        '--phase',
        '-p',
        choices=['train', 'val', 'test'],
        default='train',
        help='which dataloader of the config (default: train, with its augmentations)',
    )
    parser.add_argument('--show-number', '-n', type=int, default=10, help='how many samples (default: 10)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    options = cfg_options(args.cfg_options)
    from repvit_mm.apis import load_config
    from repvit_mm.apis.analysis import browse_dataset

    cfg = load_config(args.config, options)
    written = browse_dataset(cfg, args.output_dir, phase=args.phase, number=args.show_number)
    print(f'{len(written)} pictures in {args.output_dir}')


if __name__ == '__main__':
    run_cli(main)
