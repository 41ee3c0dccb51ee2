"""``mmcv._ext`` for mmcv built without compiled ops: tools/install.sh puts this file into mmcv as
``mmcv/_ext.py`` (keep it free of imports at the top: it is copied, not imported from here).

mmcv's op modules run ``ext_module = ext_loader.load_ext('_ext', [names])`` when ``mmcv.ops`` is imported,
which only checks that each name exists. Every name is answered with a function that, when called, runs
:func:`repvit_mm.ops.mmcv_op` -- torchvision's kernel, or one ``UnservedOpError`` naming the op. Importing
``repvit_mm.ops`` waits for that first call: ``mmcv.ops`` is imported in the middle of importing mmdet,
mmseg, mmpretrain or repvit_mm itself, whichever comes first, and importing repvit_mm there would close an
import cycle.
"""


def __getattr__(name: str):
    if name.startswith('__'):  # module attributes Python itself looks up (__path__, __file__, ...)
        raise AttributeError(name)

    def op(*args, **kwargs):
        from repvit_mm.ops import mmcv_op

        return mmcv_op(name)(*args, **kwargs)

    op.__name__ = op.__qualname__ = name
    return op
