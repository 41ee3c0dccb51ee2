"""Convert an authors' RepViT release file or a timm ``repvit_*`` state dict to repvit-mm's layout.

    python tools/convert_checkpoint.py SRC DST --arch m0_9 [--format auto|official|timm] [--force]

SRC: ``.pth`` (``{'model': ...}``, ``{'state_dict': ...}`` or a bare state dict) or timm's
``.safetensors``. DST receives ``{'state_dict': {backbone.*, head.*}, 'meta': {...}}``, which
``load_checkpoint`` and ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')`` read.
Every key and shape is checked against ``--arch``; on a mismatch nothing is written.
"""
import argparse
import os
import os.path as osp

import torch

import repvit_mm  # noqa: F401  (registers modules, safe checkpoint loading)
from repvit_mm.apis.cli import run_cli
from repvit_mm.models.backbones.repvit import RepViT, normalize_arch_name
from repvit_mm.models.convert import convert_checkpoint, detect_format, read_weights, unwrap_state_dict
from repvit_mm.utils.errors import UserInputError
from repvit_mm.utils.outputs import atomic_output, check_output


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="authors' .pth, timm .pth/.safetensors")
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--arch', required=True,
                        help=f'RepViT arch: {", ".join(RepViT.arch_zoo)} (M0.9 / repvit_m0_9 also accepted)')
    parser.add_argument('--format', default='auto', choices=['auto', 'official', 'timm'],
                        help='layout of SRC (default: detected from the keys)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    arch = normalize_arch_name(args.arch)
    if arch not in RepViT.arch_zoo:
        raise UserInputError(f'unknown --arch {args.arch!r}; choose from {", ".join(RepViT.arch_zoo)}')
    if osp.abspath(args.src) == osp.abspath(args.dst):
        raise UserInputError('SRC and DST are the same file')
    if not osp.exists(args.dst):
        os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    dst = check_output(args.dst, args.force)
    ckpt = read_weights(args.src)
    try:
        state = unwrap_state_dict(ckpt)
        fmt = detect_format(state) if args.format == 'auto' else args.format
        converted = convert_checkpoint(state, arch, format=fmt)
    except UserInputError as err:
        raise UserInputError(f'{args.src}: {err}') from None
    if fmt == 'mm':
        raise UserInputError(f'{args.src} is already a repvit-mm checkpoint (keys backbone.*); '
                             'nothing to convert')
    meta = dict(arch=arch, source_format=fmt, converted_from=osp.basename(args.src),
                distillation_head=any(k.startswith('head.head_dist.') for k in converted),
                num_classes=int(converted['head.head.linear.weight'].shape[0])
                if 'head.head.linear.weight' in converted else None)
    with atomic_output(dst) as tmp:  # a failed save never leaves a half-written DST
        torch.save({'state_dict': converted, 'meta': meta}, tmp)
    print(f'converted {fmt} checkpoint {args.src} (arch {arch}, {len(converted)} tensors) -> {args.dst}')


if __name__ == '__main__':
    run_cli(main)
