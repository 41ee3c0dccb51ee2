"""Evaluate an exported ONNX file with the config's own test loop: an ONNX Runtime session as an mmengine model.

:class:`OnnxRuntimeModel` is an mmengine ``BaseModel`` whose ``test_step`` runs the config's data
preprocessor (normalisation, padding), feeds the batch to ONNX Runtime and turns the outputs into the
task's data samples with the framework's own post-processing (mmpretrain's head for classifiers, mmseg's
``postprocess_result`` for segmentors: padding removed, resized to the original image, argmax; mmdet's
``FCNMaskHead.predict_by_feat`` for Mask R-CNN: boxes scaled back, masks pasted into the original image). mmengine's
Runner, test loop and the config's evaluator then run unchanged, so ``tools/test.py CONFIG MODEL.onnx``
prints the same metrics as for a checkpoint.

The file's height and width are fixed at export. A classifier must be fed exactly that size (the test
pipeline's crop; anything else is refused). A segmentor's batch is resized (bilinear) to the exported
size and its class scores back to the batch's size, as a deployed model with a fixed input would be used;
where the test pipeline gives the exported size (e.g. the Shapes configs) nothing is resized. A Mask R-CNN
takes one image at a time, padded to the exported size (larger images are refused).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from ..models.build import build_model
from ..utils.errors import UserInputError

__all__ = ['OnnxRuntimeModel', 'onnx_test_cfg']

#: Hooks that act on a PyTorch model's weights: nothing to do for (or to) an ONNX file.
_WEIGHT_HOOKS = ('EMAHook', 'ReparameterizeHook')


@MODELS.register_module()
class OnnxRuntimeModel(BaseModel):
    """Test-time model over an ONNX file exported by :func:`repvit_mm.deploy.export_onnx`.

    Args:
        onnx_file: the exported classifier (output ``logits``), whole segmentor (``logits`` or ``labels``) or
            whole Mask R-CNN (``boxes``, ``scores``, ``labels``, ``masks``).
        model: the config's model dict: its task's post-processing is built from it (no weights loaded).
        task: ``'classification'``, ``'segmentation'`` or ``'detection'`` (the config's ``default_scope``).
        data_preprocessor: the config's data preprocessor (mmengine's Runner passes it).
        threads: ONNX Runtime intra-op threads (default: all cores).
        scope: the config's ``default_scope``, in which ``model`` is built.
    """

    def __init__(
        self,
        onnx_file: str,
        model: dict,
        task: str,
        data_preprocessor: dict | None = None,
        threads: int | None = None,
        scope: str | None = None,
    ) -> None:
        model = copy.deepcopy(model)
        if data_preprocessor is not None:
            model['data_preprocessor'] = copy.deepcopy(data_preprocessor)
        # the framework's post-processing lives on the PyTorch model: built once, its weights never used (and
        # not registered as a submodule, so that the Runner sees a model without parameters); its data
        # preprocessor, with the framework's defaults filled in, is this model's
        task_model = build_model(Config(dict(model=model, default_scope=scope)))
        super().__init__(data_preprocessor=task_model.data_preprocessor)
        self._task_model = [task_model]
        from .export_onnx import ort_session

        self.onnx_file = onnx_file
        self.task = task
        self.session = ort_session(onnx_file, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ['input'] or len(inputs[0].shape) != 4:
            raise UserInputError(f'{onnx_file}: not a repvit-mm export (one input "input" of 4 dimensions expected)')
        self.size = tuple(inputs[0].shape[2:])
        if not all(isinstance(s, int) for s in self.size):
            raise UserInputError(f'{onnx_file}: the input height and width must be fixed, got {self.size}')
        self.output = outputs[0].name
        self.outputs = [o.name for o in outputs]
        expected = {
            'classification': ('logits',),
            'segmentation': ('logits', 'labels'),
            'detection': ('boxes',),
        }.get(task, ())
        if self.output not in expected:
            raise UserInputError(
                f'{onnx_file} outputs {self.output!r}; a {task} config is evaluated from '
                f'{" or ".join(expected) or "nothing exported here"} (export without --backbone-only)'
            )

    def _run(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.session.run([self.output], {'input': inputs.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out)

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None, mode: str = 'predict') -> Any:
        if mode != 'predict':
            raise UserInputError(f'an ONNX model can only predict (mode {mode!r} asked)')
        task_model = self._task_model[0]
        size = tuple(inputs.shape[2:])
        if self.task == 'detection':
            return self._detect(task_model, inputs, data_samples)
        if self.task == 'classification':
            if size != self.size:
                raise UserInputError(
                    f'{self.onnx_file} takes {self.size[0]}x{self.size[1]} images; the test pipeline gives '
                    f'{size[0]}x{size[1]}: export with --shape {size[0]} {size[1]}'
                )
            return task_model.head._get_predictions(self._run(inputs), data_samples)
        if size != self.size:
            inputs = F.interpolate(inputs, size=self.size, mode='bilinear', align_corners=False)
        out = self._run(inputs)
        if self.output == 'labels':  # one-hot scores: mmseg's post-processing then gives these labels back
            num_classes = max(2, int(task_model.decode_head.out_channels))
            out = F.one_hot(out.long(), num_classes).permute(0, 3, 1, 2).float()
        if tuple(out.shape[2:]) != size:
            out = F.interpolate(out, size=size, mode='bilinear', align_corners=task_model.align_corners)
        return task_model.postprocess_result(out, data_samples)

    def _detect(self, detector, inputs: torch.Tensor, data_samples: list) -> list:
        """One image at a time (the file takes one): padded (bottom and right, zeros as the data
        preprocessor pads) to the exported size, ONNX Runtime, then mmdet's own mask post-processing
        (``FCNMaskHead.predict_by_feat``: boxes back to the original image, 28x28 masks pasted there and
        thresholded with the config's ``mask_thr_binary``)."""
        from mmengine.structures import InstanceData

        size = tuple(inputs.shape[2:])
        if size[0] > self.size[0] or size[1] > self.size[1]:
            raise UserInputError(
                f'{self.onnx_file} takes images up to {self.size[0]}x{self.size[1]}; the test pipeline gives '
                f'{size[0]}x{size[1]}: export with a larger --shape'
            )
        inputs = F.pad(inputs, (0, self.size[1] - size[1], 0, self.size[0] - size[0]))
        head = detector.roi_head.mask_head
        results = []
        for image, sample in zip(inputs, data_samples, strict=True):
            boxes, scores, labels, masks = (
                torch.from_numpy(a)
                for a in self.session.run(
                    self.outputs, {'input': image[None].detach().float().cpu().contiguous().numpy()}
                )
            )
            keep = labels >= 0
            found = InstanceData(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep])
            probs = masks[keep]
            # predict_by_feat takes every class's map and picks the label's: put ours in that channel
            per_class = probs.new_zeros(len(probs), head.num_classes, *probs.shape[1:])
            per_class[torch.arange(len(probs)), found.labels] = probs
            results.extend(
                head.predict_by_feat(
                    (per_class,),
                    [found],
                    [sample.metainfo],
                    detector.test_cfg.rcnn,
                    rescale=True,
                    activate_map=True,
                )
            )
        return detector.add_pred_to_datasample(data_samples, results)


def onnx_test_cfg(cfg: Config, onnx_file: str | os.PathLike, threads: int | None = None) -> Config:
    """``cfg`` with its model replaced by :class:`OnnxRuntimeModel` over ``onnx_file`` (and the hooks that act
    on PyTorch weights, e.g. EMA, removed); ``tools/test.py`` then runs its test set as for a checkpoint."""
    from .model import task_of

    cfg = copy.deepcopy(cfg)
    task = task_of(cfg)
    model = dict(cfg.model)
    model.pop('teacher', None)
    cfg.model = dict(
        type='OnnxRuntimeModel',
        onnx_file=str(onnx_file),
        model=model,
        task=task,
        threads=threads,
        scope=cfg.get('default_scope'),
    )
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks') or [] if h.get('type') not in _WEIGHT_HOOKS]
    return cfg
