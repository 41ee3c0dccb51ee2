"""Plot the curves of training logs (mmengine json logs) and report training time.

    python tools/analysis_tools/analyze_logs.py plot_curve LOG [LOG ...] --keys loss lr accuracy/top1
                                                --out curves.png [--legend A B] [--title T]
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG

LOG: ``<work_dir>/<timestamp>/vis_data/scalars.json``, the run's ``.log`` file or its directory.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: the shared command-line helpers
from cli import ArgumentParser, run_cli  # noqa: E402


def parse_args(argv=None):
    parser = ArgumentParser(description='Analyze training logs')
    commands = parser.add_subparsers(dest='command', required=True)
    plot = commands.add_parser('plot_curve', help='loss / lr / metric curves as a PNG')
    plot.add_argument('logs', nargs='+', help='json logs (vis_data/scalars.json) or run directories')
    plot.add_argument(
        '--keys',
        nargs='+',
        default=['loss'],
        help='logged values to plot, one panel each (default: loss), e.g. lr mIoU coco/bbox_mAP',
    )
    plot.add_argument('--out', required=True, help='output .png (replaced if it exists)')
    plot.add_argument('--legend', nargs='+', help='a name per log')
    plot.add_argument('--title', help='figure title')
    timing = commands.add_parser('cal_train_time', help='time per iteration and in total')
    timing.add_argument('logs', nargs='+', help='json logs (vis_data/scalars.json) or run directories')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from repvit_mm.apis.analysis import plot_curves, training_time

    if args.command == 'plot_curve':
        print(f'curves: {plot_curves(args.logs, args.keys, args.out, legends=args.legend, title=args.title)}')
        return
    for log in args.logs:
        t = training_time(log)
        print(
            f'{log}: {t["iterations"]} iterations, {t["seconds_per_iter"]:.4f} s/iter on average '
            f'(logging intervals: slowest {t["slowest_interval_s"]:.4f}, fastest {t["fastest_interval_s"]:.4f}), '
            f'{t["total_s"] / 60:.2f} min in total'
        )


if __name__ == '__main__':
    run_cli(main)
