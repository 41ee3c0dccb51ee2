"""Train a repvit-mm config (classification, detection or segmentation) with mmengine's Runner.

python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--force] [--amp | --no-amp] [--auto-scale-lr]
                             [--cfg-options k=v ...] [--strict-data]
                             [--launcher none|pytorch|slurm]
"""

from cli import ArgumentParser, add_cfg_options, cfg_options, existing_file, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description='Train a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        metavar='CKPT',
        help='resume from CKPT, or from the latest checkpoint in the work dir if none is given',
    )
    parser.add_argument(
        '--force',
        action='store_true',
        help="train into a work dir that holds an earlier run's checkpoints: they are kept, this run's "
        'checkpoints go to its own folder WORK_DIR/TIMESTAMP/ (without --force such a run is refused)',
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        '--amp', action='store_true', help='mixed precision (fp16 autocast, dynamic loss scaling; needs a GPU)'
    )
    precision.add_argument(
        '--no-amp',
        action='store_false',
        dest='amp',
        help='fp32, also for configs that train in mixed precision where a GPU is present',
    )
    parser.set_defaults(amp=None)  # neither: as the config says
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr to the actual total batch size (config auto_scale_lr)',
    )
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
    if args.resume not in (None, 'auto'):
        existing_file(args.resume, 'checkpoint')
    options = cfg_options(args.cfg_options)
    from repvit_mm.apis import load_config, prepare_train_cfg, train

    cfg = load_config(args.config, options)
    cfg = prepare_train_cfg(
        cfg,
        work_dir=args.work_dir,
        resume=args.resume,
        amp=args.amp,
        launcher=args.launcher,
        auto_scale_lr=args.auto_scale_lr,
        strict_data=args.strict_data,
        force=args.force,
    )
    runner = train(cfg)
    print(f'work dir: {runner.work_dir}\nlog: {runner.log_dir}')
    saved_to = [h.out_dir for h in runner.hooks if type(h).__name__.endswith('CheckpointHook')]
    if saved_to:
        print(f'checkpoints: {saved_to[0]}')


if __name__ == '__main__':
    run_cli(main)
