"""Print a config as the tools see it: every ``_base_`` merged, ``--cfg-options`` applied (and checked).

python tools/analysis_tools/print_config.py CONFIG [--cfg-options k=v ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: the shared command-line helpers
from cli import ArgumentParser, add_cfg_options, cfg_options, existing_file, run_cli  # noqa: E402


def parse_args(argv=None):
    parser = ArgumentParser(description='Print the whole config')
    parser.add_argument('config', help='config file')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    options = cfg_options(args.cfg_options)
    from repvit_mm.apis import load_config

    cfg = load_config(args.config, options)
    print(f'Config:\n{cfg.pretty_text}')


if __name__ == '__main__':
    run_cli(main)
