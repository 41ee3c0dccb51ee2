"""Print a config as the tools see it: every ``_base_`` merged, ``--cfg-options`` applied (and checked).

    python tools/analysis_tools/print_config.py CONFIG [--cfg-options k=v ...]
"""
import argparse

from mmengine.config import DictAction

from repvit_mm.apis import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Print the whole config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings, e.g. model.backbone.arch=m1_1')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import repvit_mm  # noqa: F401
    from repvit_mm.apis import load_config

    cfg = load_config(args.config, args.cfg_options)
    print(f'Config:\n{cfg.pretty_text}')


if __name__ == '__main__':
    run_cli(main)
