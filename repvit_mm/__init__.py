"""repvit-mm: RepViT (Revisiting Mobile CNN From ViT Perspective) on OpenMMLab 2.x.

Importing the package (configs do it with ``custom_imports=dict(imports=['repvit_mm'])``) registers the
RepViT backbone, head and the project's transforms, hooks and model wrappers in the OpenMMLab registries;
makes mmengine load checkpoints of every scheme with ``torch.load(weights_only=True)`` (see
``utils.safe_checkpoint``); makes mmengine's ``Config.fromstring`` -- how its inferencers rebuild a
config from a checkpoint's text -- parse that text as data instead of running it (see ``utils.safe_config``);
makes mmengine's loading strict, layout-converting, for models with a
RepViT inside (see ``models.mmengine_loading``); and adds our classifiers to mmpretrain's model hub
(``list_models('*repvit*')``, ``get_model(name)``; see ``models.hub``).
"""

import warnings

# mmengine imports pkg_resources, whose deprecation notice would open every tool's output; setuptools is
# pinned below 81 (mmcv's build imports it), so the notice asks nothing of our users.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API', category=UserWarning)

from .utils import safe_checkpoint as _safe_checkpoint  # noqa: E402
from .utils import safe_config as _safe_config  # noqa: E402
from .version import __version__  # noqa: E402,F401

_safe_checkpoint.install()
_safe_config.install()

from . import classification, datasets, engine, models  # noqa: E402,F401  (registration)
from .models import mmengine_loading as _mmengine_loading  # noqa: E402

_mmengine_loading.install()

models.hub.register_model_index()
