"""Convert an authors' RepViT release file (ImageNet, COCO Mask R-CNN, ADE20K Semantic FPN) or a timm
``repvit_*`` state dict to repvit-mm's layout.

    python tools/convert_checkpoint.py SRC DST --arch m1_1 [--format auto|official|coco|ade20k|timm] [--force]

SRC: any file or URL mmengine reads (``.pth`` with ``{'model': ...}``, ``{'state_dict': ...}`` or a bare
state dict; timm's ``.safetensors``), loaded weights-only. The layout -- and so the task -- is detected from
the keys. DST receives ``{'state_dict': ..., 'meta': {...}}``: ``backbone.*`` / ``head.*`` for a classifier
(``load_checkpoint``, ``init_cfg=dict(type='Pretrained', prefix='backbone.')``), the whole Mask R-CNN or
Semantic FPN for the COCO / ADE20K releases (``load_from``, ``tools/test.py``), class names in
``meta.dataset_meta``. The backbone's keys and shapes are checked against ``--arch``; on a mismatch nothing
is written. tools/test.py and ``load_from`` also read the release files directly: converting is optional.
"""

from cli import ArgumentParser, existing_file, run_cli

ARCHS = ('m0_6', 'm0_9', 'm1_0', 'm1_1', 'm1_5', 'm2_3', 'm1', 'm2', 'm3')  # RepViT.arch_zoo (a test checks)
FORMATS = ('official', 'coco', 'ade20k', 'timm')  # repvit_mm.models.FORMATS but 'mm' (ours: nothing to convert)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="authors' .pth (ImageNet, COCO, ADE20K), timm .pth/.safetensors, or a URL")
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--arch', required=True, help=f'RepViT arch: {", ".join(ARCHS)} (M0.9 / repvit_m0_9 also accepted)'
    )
    parser.add_argument(
        '--format', default='auto', choices=['auto', *FORMATS], help='layout of SRC (default: detected from the keys)'
    )
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    existing_file(args.src, 'checkpoint')
    from repvit_mm.apis import convert_checkpoint_file

    print(convert_checkpoint_file(args.src, args.dst, arch=args.arch, format=args.format, force=args.force))


if __name__ == '__main__':
    run_cli(main)
