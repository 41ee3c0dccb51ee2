# The authors' model EMA (timm ModelEma, decay 0.99996), off in every config: their reported numbers do not
# use it. Switch it on by adding this file to a config's _base_, e.g. a file next to the ImageNet configs:
#   _base_ = ['./repvit-m0.9_8xb256-distill-300e_in1k.py', '../_base_/repvit_ema.py']
# mmengine's EMAHook updates ema = (1 - momentum) * ema + momentum * weights after every iteration, so
# momentum = 1 - decay; update_buffers averages the BN statistics too, as ModelEma averages the whole state
# dict. With it on, validation runs on the averaged weights, and checkpoints hold them as 'state_dict' (what
# tools/test.py and load_checkpoint read) with the raw weights under 'ema_state_dict' (mmengine's layout).
custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1 - 0.99996, update_buffers=True,
         priority='ABOVE_NORMAL'),
]
