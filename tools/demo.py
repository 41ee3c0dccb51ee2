"""Run a checkpoint on one image (or several) and save the rendered prediction.

    python tools/demo.py IMAGE [IMAGE ...] CONFIG CHECKPOINT --out OUT.png [--task auto] [--force]
                         [--topk 5] [--score-thr 0.3] [--resize N] [--title TEXT] [--device cpu|cuda|cuda:N]

classifier: the top-5 classes and scores; detector: masks, boxes and labels; segmentor: the colour overlay
with class names (task from the config's default_scope). Training and fused (deploy) checkpoints both work.
Small images are drawn enlarged (short side 256 px at least); several images make a grid of captioned panels.
"""

from cli import ArgumentParser, existing_file, run_cli

TASKS = ('auto', 'classification', 'detection', 'segmentation')  # repvit_mm.deploy.render.TASK_CHOICES


def parse_args(argv=None):
    parser = ArgumentParser(description='Render predictions on one image or several')
    parser.add_argument('image', nargs='+', help='input image(s)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='training or fused checkpoint')
    parser.add_argument('--out', required=True, help='output .png')
    parser.add_argument('--task', choices=TASKS, default='auto', help="default auto: from the config's default_scope")
    parser.add_argument('--topk', type=int, default=5, help='classes listed by a classifier')
    parser.add_argument('--score-thr', type=float, default=0.3, help='lowest detection score drawn')
    parser.add_argument(
        '--resize',
        type=int,
        default=None,
        help="short side of each drawn prediction (default: the image's, at least 256)",
    )
    parser.add_argument('--title', help='title drawn above the picture')
    parser.add_argument('--device', default='cpu', help='where the model runs: cpu (default), cuda, cuda:N')
    parser.add_argument('--force', action='store_true', help='replace OUT if it exists')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for image in args.image:
        existing_file(image, 'image')
    existing_file(args.config, 'config file')
    existing_file(args.checkpoint, 'checkpoint')
    from repvit_mm.deploy import render_prediction

    image = args.image[0] if len(args.image) == 1 else args.image
    info = render_prediction(
        image,
        args.config,
        args.checkpoint,
        args.out,
        task=args.task,
        force=args.force,
        topk=args.topk,
        score_thr=args.score_thr,
        resize=args.resize,
        title=args.title,
        device=args.device,
    )
    height, width = info['size']
    for note in info['notes']:
        print(f'note: {note}')
    print(info['summary'])
    print(f'{info["task"]} picture ({width}x{height}): {info["out"]}')


if __name__ == '__main__':
    run_cli(main)
