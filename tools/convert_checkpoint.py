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

import os
import os.path as osp

from cli import ArgumentParser, existing_file, run_cli

ARCHS = ('m0_6', 'm0_9', 'm1_0', 'm1_1', 'm1_5', 'm2_3', 'm1', 'm2', 'm3')  # RepViT.arch_zoo (a test checks)
FORMATS = {'official': 'authors-classification', 'coco': 'authors-coco', 'ade20k': 'authors-ade20k', 'timm': 'timm'}


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
    import torch

    from repvit_mm.models.backbones.repvit import RepViT, normalize_arch_name
    from repvit_mm.models.checkpoints import LAYOUTS, TASK_OF_LAYOUT, convert_to_repvit_mm, read_checkpoint
    from repvit_mm.utils.errors import UserInputError
    from repvit_mm.utils.outputs import atomic_output, check_output

    arch = normalize_arch_name(args.arch)
    if arch not in RepViT.arch_zoo:
        raise UserInputError(f'unknown --arch {args.arch!r}; choose from {", ".join(RepViT.arch_zoo)}')
    if osp.abspath(args.src) == osp.abspath(args.dst):
        raise UserInputError('SRC and DST are the same file')
    if not osp.exists(args.dst):
        os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    dst = check_output(args.dst, args.force)
    ckpt = read_checkpoint(args.src)
    if args.format != 'auto' and FORMATS[args.format] != ckpt.layout:
        raise UserInputError(
            f'{args.src} is not in the --format {args.format} layout: its keys look like a {LAYOUTS[ckpt.layout]}'
        )
    try:
        converted = convert_to_repvit_mm(ckpt, arch)
    except UserInputError as err:
        raise UserInputError(str(err) if args.src in str(err) else f'{args.src}: {err}') from None
    task = TASK_OF_LAYOUT[ckpt.layout]
    fmt = (
        next(name for name, layout in FORMATS.items() if layout == ckpt.layout)
        if ckpt.layout in FORMATS.values()
        else ckpt.layout
    )
    meta = dict(arch=arch, task=task, source_format=fmt, converted_from=osp.basename(args.src))
    if task == 'classification':
        meta.update(
            distillation_head=any(k.startswith('head.head_dist.') for k in converted),
            num_classes=int(converted['head.head.linear.weight'].shape[0])
            if 'head.head.linear.weight' in converted
            else None,
        )
    if ckpt.dataset_meta:
        meta['dataset_meta'] = ckpt.dataset_meta
    with atomic_output(dst) as tmp:  # a failed save never leaves a half-written DST
        torch.save({'state_dict': converted, 'meta': meta}, tmp)
    print(
        f'converted {fmt} checkpoint {args.src} ({LAYOUTS[ckpt.layout]}; {task}, arch {arch}, '
        f'{len(converted)} tensors) -> {args.dst}'
    )


if __name__ == '__main__':
    run_cli(main)
