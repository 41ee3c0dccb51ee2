"""Config text that comes with a checkpoint is data: read it, never run it.

mmengine stores the training config in every checkpoint as Python text (``meta['cfg']``, written by
``Config.pretty_text``: ``key=value`` lines of ``dict(...)``, lists, tuples and literals). Several upstream
routes turn such text back into a config with ``Config.fromstring``, which writes it to a file and
*executes* it: mmengine's inferencers when no model config is given (``DetInferencer(weights=...)``,
``MMSegInferencer(model=None, weights=...)``, any ``BaseInferencer``: the config comes from
``message_hub.runtime_info.cfg`` or ``meta.cfg``) and ``Runner.resume`` (a legacy ``meta['config']``).
A checkpoint that passes ``torch.load(weights_only=True)`` could therefore still run a line of its own.
Even a purely declarative config is code in disguise: a ``type`` string that no registry knows is imported
by ``Registry.get`` (``get_object_from_string``), so ``type='subprocess.Popen', args='...', shell=True``
runs a command when the model is built.

:func:`install` (run on ``import repvit_mm``) replaces ``Config.fromstring`` with
:func:`config_from_text`, which

* parses ``.py`` text with :mod:`ast` and accepts only ``name = literal`` assignments, where a literal is
  a string, number, bool, None, a list / tuple / set / dict of literals, a negated number or a
  ``dict(key=literal, ...)`` call (everything ``Config.pretty_text`` writes); JSON with :mod:`json` and
  YAML with ``yaml.safe_load``;
* accepts ``custom_imports`` only of modules of OpenMMLab packages and of repvit_mm (which it imports, as
  ``Config.fromfile`` would); a ``type`` string only if a registry has it, or if it is a plain name that
  no module has (``RoIAlign``, ``nms``: names upstream code looks up itself), so nothing is imported by
  name; ``_scope_`` / ``default_scope`` only of those packages; and only dotted names under the keys
  upstream code passes to ``eval`` (:data:`EVALUATED_KEYS`);
* refuses anything else with one :class:`UnsafeConfigError` naming the checkpoint and key the text came
  from (a :class:`ConfigText`, as :mod:`.safe_checkpoint` reads it) and the offending line.

Config *files* (``Config.fromfile``) are the user's own and still run as Python; to use a checkpoint whose
stored config is refused, give its config file (``DetInferencer(model='config.py', weights=...)``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE

from .errors import UserInputError

__all__ = [
    'UnsafeConfigError',
    'TRUSTED_PACKAGES',
    'parse_config_text',
    'check_config_dict',
    'config_from_text',
    'checkpoint_config_texts',
    'check_checkpoint_configs',
    'ConfigText',
    'name_config_texts',
    'install',
]

#: Packages whose modules a checkpoint's ``custom_imports`` may name (and whose registry scopes its
#: ``type`` strings may use): the OpenMMLab libraries mmengine knows, and ours.
TRUSTED_PACKAGES = frozenset({'repvit_mm', 'mmengine', 'mmcv', *MODULE2PACKAGE})

#: Keys whose string values upstream code passes to ``eval`` (mmpretrain's torchvision transforms: ``dtype``;
#: mmdet's ``CameraMotionCompensation``: ``warp_mode``; mmcv's ``RFSearchHook``: ``search_op``): only a
#: dotted name is accepted there.
EVALUATED_KEYS = frozenset({'dtype', 'warp_mode', 'search_op'})
_FILE_NAME = re.compile(r'[\w./-]+\.py')
_DOTTED_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')

#: Where a checkpoint keeps config text: mmengine's inferencers read the first two, ``Runner.resume`` the last.
CONFIG_KEYS = (('message_hub', 'runtime_info', 'cfg'), ('meta', 'cfg'), ('meta', 'config'))


class UnsafeConfigError(UserInputError):
    """Config text (from a checkpoint) that is not plain data, or names code no registry holds."""


# ------------------------------------------------------------------------------------------ parsing
def _refuse(source: str, text: str, node: ast.AST | None, why: str) -> UnsafeConfigError:
    where = ''
    if node is not None and getattr(node, 'lineno', None):
        lines = text.splitlines()
        line = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else ''
        where = f' line {node.lineno} ({line[:80]!r})'
    return UnsafeConfigError(
        f'{source}{where}: {why}; config text from a checkpoint is read as data, never run '
        '(give the config file instead, e.g. DetInferencer(model=CONFIG, weights=CHECKPOINT))'
    )


def _literal(node: ast.AST, source: str, text: str) -> Any:
    """The value of a literal expression; anything else is refused."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(item, source, text) for item in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):  # {**other}
            raise _refuse(source, text, node, 'a ** expansion is not a literal')
        return {
            _literal(k, source, text): _literal(v, source, text) for k, v in zip(node.keys, node.values, strict=True)
        }
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float, complex)
    ):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict':
        if node.args or any(kw.arg is None for kw in node.keywords):
            raise _refuse(source, text, node, 'dict(...) takes only key=literal arguments here')
        return {kw.arg: _literal(kw.value, source, text) for kw in node.keywords}
    raise _refuse(source, text, node, f'{ast.unparse(node)[:60]!r} is not a literal')


def parse_config_text(text: str, source: str = 'config text') -> dict:
    """The dict that ``Config.pretty_text``-style ``text`` spells, without running any of it.

    Raises:
        UnsafeConfigError: a statement other than ``name = literal`` (imports, calls other than
            ``dict(...)``, names, attribute access, comprehensions, ...), or text that is not Python.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        lineno = getattr(err, 'lineno', None)
        node = ast.Pass(lineno=lineno) if lineno else None
        raise _refuse(source, text, node, f'not Python config text ({type(err).__name__})') from None
    cfg: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise _refuse(source, text, stmt, 'only `name = literal` assignments are allowed')
        try:
            cfg[stmt.targets[0].id] = _literal(stmt.value, source, text)
        except RecursionError:
            raise _refuse(source, text, stmt, 'nested too deeply') from None
        except TypeError:  # an unhashable dict key or set item, e.g. {[1]: 2}
            raise _refuse(source, text, stmt, 'an unhashable dict key or set item') from None
    return cfg


# ------------------------------------------------------------------------------------------ checking
def _registries() -> list:
    """Every registry of mmengine's tree: the roots and all their children, recursively."""
    import mmengine.registry as roots
    from mmengine.registry import Registry

    found: dict[int, Registry] = {}
    stack = [value for value in vars(roots).values() if isinstance(value, Registry)]
    while stack:
        registry = stack.pop()
        if id(registry) not in found:
            found[id(registry)] = registry
            stack.extend(registry._children.values())
    return list(found.values())


def _registered(type_name: str) -> bool:
    """Whether a registry holds ``type_name`` (``Name`` or ``scope.Name``), so that building it never
    falls back to importing the name."""
    from mmengine.registry import Registry

    scope, key = Registry.split_scope_key(type_name)
    return any(key in reg._module_dict for reg in _registries() if scope is None or reg.scope == scope)


def _type_problem(type_name: str) -> str | None:
    """Why building ``type=type_name`` could import or run code that no registry holds (None: it cannot).

    ``Registry.get`` falls back to ``get_object_from_string``: a dotted name is imported and its attribute
    called (``subprocess.Popen``), a plain one imported as a module. Plain names that are no registry's are
    legitimate where upstream code looks them up itself (``roi_layer=dict(type='RoIAlign')`` in mmcv.ops,
    ``nms=dict(type='nms')``), so those pass unless a module of that name could be imported."""
    from mmengine.registry import Registry

    if _registered(type_name):
        return None
    scope, _ = Registry.split_scope_key(type_name)
    if scope is not None and scope in TRUSTED_PACKAGES:
        try:  # what Registry.get does for a scope it has not seen yet
            importlib.import_module(f'{scope}.registry')
        except ImportError:
            pass
    for registry in _registries():  # what Registry.get does first: import the registries' modules
        registry.import_from_location()
    if _registered(type_name):
        return None
    if not type_name.isidentifier():
        return 'is not in any registry (mmengine would import it by name)'
    if importlib.util.find_spec(type_name) is not None:
        return 'is not in any registry but names a module (mmengine would import it)'
    return None


def _items(obj: Any, path: str = '') -> Iterator[tuple[str, str, Any]]:
    """``(path, key, value)`` of every dict item, nested ones included."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            where = f'{path}.{key}' if path else str(key)
            yield where, key, value
            yield from _items(value, where)
    elif isinstance(obj, (list, tuple, set)):
        for index, value in enumerate(obj):
            yield from _items(value, f'{path}[{index}]')


def check_config_dict(cfg: Mapping, source: str = 'config text') -> None:
    """Refuse ``custom_imports`` outside :data:`TRUSTED_PACKAGES` (import the others) and ``type`` values
    that no registry holds.

    Raises:
        UnsafeConfigError: naming the key and value at fault.
    """
    imports = (cfg.get('custom_imports') or {}).get('imports', []) if isinstance(cfg, Mapping) else []
    imports = [imports] if isinstance(imports, str) else imports
    for name in imports:
        if not isinstance(name, str) or name.split('.')[0] not in TRUSTED_PACKAGES:
            raise _refuse(
                source,
                '',
                None,
                f'custom_imports names {name!r}, not a module of {", ".join(sorted(TRUSTED_PACKAGES))}',
            )
    for name in imports:
        try:
            importlib.import_module(name)
        except ImportError:
            if not cfg['custom_imports'].get('allow_failed_imports', False):
                raise _refuse(source, '', None, f'custom_imports names {name!r}, which is not installed') from None
    for where, key, value in _items(cfg):
        if not isinstance(value, str):
            continue
        if key == 'type' and (problem := _type_problem(value)):
            why = problem
        elif key in ('_scope_', 'default_scope') and value not in TRUSTED_PACKAGES:
            why = 'is not an OpenMMLab scope (mmengine would import its registry)'
        elif key in EVALUATED_KEYS and not _DOTTED_NAME.fullmatch(value):
            why = 'is not a dotted name (upstream code passes it to eval)'
        else:
            continue
        raise _refuse(source, '', None, f'{where}={value!r} {why}')


# ------------------------------------------------------------------------------------------ sources
class ConfigText(str):
    """Config text read from a checkpoint, with ``source`` naming it (``"FILE's meta.cfg"``) for error messages:
    mmengine hands the text on alone. A copy is a plain ``str``; pickled, it is ``str(text)``."""

    def __new__(cls, text: str, source: str) -> ConfigText:
        self = super().__new__(cls, text)
        self.source = source
        return self

    def __reduce__(self):
        return str, (str(self),)


def plain_str(text: str) -> str:
    """``str`` for a weights-only load of a pickled :class:`ConfigText` (``builtins.str``): a ``str`` only."""
    if type(text) is not str:
        raise TypeError(f'expected a str, got {type(text).__name__}')
    return text


def checkpoint_config_texts(checkpoint: Any) -> Iterator[tuple[str, str]]:
    """``(key path, text)`` of each config text a checkpoint carries (see :data:`CONFIG_KEYS`)."""
    for keys in CONFIG_KEYS:
        value = checkpoint
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            yield '.'.join(keys), value


def name_config_texts(checkpoint: Any, filename: str) -> None:
    """Make each config text in ``checkpoint`` a :class:`ConfigText` naming ``filename`` (in place)."""
    for where, text in checkpoint_config_texts(checkpoint):
        *path, key = where.split('.')
        owner = checkpoint
        for part in path:
            owner = owner[part]
        owner[key] = ConfigText(text, f"{filename}'s {where}")


def check_checkpoint_configs(checkpoint: Any, filename: str) -> None:
    """Refuse a checkpoint whose config text would not be accepted by :func:`config_from_text` (e.g.
    before publishing it: in an environment without repvit_mm, mmengine would run that text)."""
    for where, text in checkpoint_config_texts(checkpoint):
        if where == 'meta.config' and _FILE_NAME.fullmatch(text):
            continue  # a fused checkpoint names its config file there: no call can be spelled with these characters
        source = f"{filename}'s {where}"
        check_config_dict(parse_config_text(text, source), source)


# ------------------------------------------------------------------------------------------ Config
def config_from_text(cfg_str: str, file_format: str) -> Config:
    """What ``Config.fromstring`` returns, for data-only text; see the module docstring.

    Raises:
        UnsafeConfigError: the text is not plain data, or names unknown types or untrusted imports.
    """
    source = getattr(cfg_str, 'source', 'config text given to Config.fromstring')
    if file_format not in ('.py', '.json', '.yaml', '.yml'):
        raise OSError('Only py/yml/yaml/json type are supported now!')  # mmengine's own message
    if file_format == '.py':
        cfg = parse_config_text(cfg_str, source)
    else:
        try:
            if file_format == '.json':
                cfg = json.loads(cfg_str)
            else:
                import yaml

                cfg = yaml.safe_load(cfg_str)
        except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError's message
            raise _refuse(source, cfg_str, None, f'not {file_format[1:]} text ({err})') from None
        except Exception as err:  # noqa: BLE001 - yaml's errors
            raise _refuse(source, cfg_str, None, f'not {file_format[1:]} text ({type(err).__name__})') from None
        if not isinstance(cfg, dict):
            raise _refuse(source, cfg_str, None, f'the top level is a {type(cfg).__name__}, not a mapping')
    check_config_dict(cfg, source)
    try:
        return Config(cfg, cfg_text=cfg_str)
    except (KeyError, TypeError) as err:  # reserved keys (filename, text, ...)
        raise _refuse(source, cfg_str, None, f'not a config ({err})') from None


def install() -> None:
    """Make ``Config.fromstring`` :func:`config_from_text` (idempotent). Called when :mod:`repvit_mm` is
    imported; it holds for every module that calls ``Config.fromstring``, imported before or after."""
    Config.fromstring = staticmethod(config_from_text)
