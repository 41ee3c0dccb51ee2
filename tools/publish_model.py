"""Prepare a checkpoint for release: drop the optimizer, message hub and schedulers (training state),
keep the weights and meta, and add the first 8 hex digits of the file's sha256 to its name.

    python tools/publish_model.py IN.pth OUT.pth [--force]    # writes OUT-<sha256[:8]>.pth
"""

from cli import ArgumentParser, existing_file, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Strip training state from a checkpoint and hash its name')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('out', help='output name, e.g. repvit-m0.9_shapes.pth (the hash is added to it)')
    parser.add_argument('--force', action='store_true', help='replace the published file if it exists')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.checkpoint, 'checkpoint')
    from repvit_mm.apis.publish import publish_checkpoint

    print(f'published: {publish_checkpoint(args.checkpoint, args.out, force=args.force)}')


if __name__ == '__main__':
    run_cli(main)
