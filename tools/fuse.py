"""Fold every BatchNorm and RepVGG branch of a checkpoint into a deploy checkpoint.

    python tools/fuse.py CONFIG CHECKPOINT OUT.pth [--force]

Works for classifier, detector and segmentor configs. The deploy checkpoint loads strictly into the same
config built with the deploy flags (printed at the end), e.g. for a classifier
``--cfg-options model.backbone.deploy=True model.head.deploy=True``; the deploy tools (export, demo,
benchmark) and ``tools/test.py`` with those options accept it as it is.
"""

from cli import ArgumentParser, existing_file, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Fuse (reparameterize) a checkpoint for deployment')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('out', help='where to write the fused (deploy) checkpoint')
    parser.add_argument('--force', action='store_true', help='replace OUT if it exists')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    existing_file(args.config, 'config file')
    existing_file(args.checkpoint, 'checkpoint')
    import repvit_mm  # noqa: F401  (registration, safe checkpoint loading)
    from repvit_mm.deploy import fuse_checkpoint

    info = fuse_checkpoint(args.config, args.checkpoint, args.out, force=args.force)
    print(f'params: {info["params_before"] / 1e6:.3f} M -> {info["params_after"] / 1e6:.3f} M (fused)')
    print(f'max abs diff fused vs unfused on a random batch: {info["max_abs_diff"]:.3g}')
    options = ' '.join(f'{k}={v}' for k, v in info['cfg_options'].items())
    print(f'load it with the config and --cfg-options {options}')
    print(f'fused checkpoint: {info["out"]}')


if __name__ == '__main__':
    run_cli(main)
