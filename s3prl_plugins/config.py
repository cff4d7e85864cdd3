"""Reading and checking the YAML configs of every CLI: numbers as people write them, typed sections,
and errors that name the key and the fix before anything is written.

* :func:`load_yaml` / :func:`parse_value`: YAML with YAML 1.2's numbers (``1e-4`` is a float; PyYAML
  follows YAML 1.1, where an exponent without a dot is a string), for files and ``--set`` values.
* :func:`apply_overrides`: ``--set section.key=value`` into a config.
* :func:`from_dict` / :func:`check_fields`: a section into a dataclass -- an unknown key is refused with the
  nearest valid name, a wrong type with the expected one, a value out of range (field metadata ``min``,
  ``gt``, ``max``, ``choices``) with the range.
* :func:`check_kwargs`: a section that is a function's keyword arguments (a model factory, a task).

Why by hand: the configs are already dataclasses (``TrainerConfig``, ``SSLModelConfig``) and function
signatures; a schema library (pydantic) would add a dependency and still not suggest the nearest key.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import re
import typing
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import yaml


class ConfigError(ValueError):
    """A config that cannot run: the message names the file or key and what is expected."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2's float syntax (``1e-4``, ``5E3``, ``.5``, ``-1.``)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
# Replace (not add to) the float resolver: the implicit resolvers of a first character are tried in order.
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_value(text: str) -> Any:
    """A YAML scalar or flow value as the config files read it (``1e-4`` -> 0.0001, ``[1, 2]``, ``null``)."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str) -> Any:
    """The contents of a YAML file, with numbers as :func:`parse_value` reads them."""
    try:
        with open(path) as f:
            return yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_config(path: str) -> Dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty config)."""
    config = load_yaml(path)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, not a {type(config).__name__}")
    return config


def merge(base: Dict[str, Any], more: Dict[str, Any]) -> Dict[str, Any]:
    """``more`` over ``base``: nested mappings merged key by key, anything else replaced."""
    out = dict(base)
    for k, v in more.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(config: Dict[str, Any], overrides: Optional[Iterable[str]]) -> Dict[str, Any]:
    """``section.key=value`` (value parsed by :func:`parse_value`) into ``config``; a number indexes a
    list (``steps.0.iterations=2``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        path, text = item.split("=", 1)
        try:
            value = parse_value(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({e})") from None
        node: Any = config
        keys = path.split(".")
        for i, k in enumerate(keys):
            last = i == len(keys) - 1
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise ConfigError(f"--set {item}: {k!r} is not an index of a list of {len(node)}")
                if last:
                    node[int(k)] = value
                else:
                    node = node[int(k)]
            elif isinstance(node, dict):
                if last:
                    node[k] = value
                else:
                    if node.get(k) is None:
                        node[k] = {}
                    node = node[k]
            else:
                raise ConfigError(f"--set {item}: {'.'.join(keys[:i])} is a {type(node).__name__}, not a section")
    return config


def nearest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(mapping: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse keys of ``mapping`` not in ``allowed``, naming the nearest valid one."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                f"{_join(where, key)}: unknown key{nearest(key, allowed)}; valid keys: {', '.join(sorted(allowed))}"
            )


def check_mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {value!r} ({type(value).__name__})")
    return value


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple, Sequence, typing.Sequence):
        return "a list"
    if origin in (dict, Mapping, typing.Mapping, collections.abc.Mapping):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def check_type(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (an int is a valid float; an integral float a valid int), or
    :class:`ConfigError` naming ``key`` and the expected type."""
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        for alt in args:
            if alt is type(None):
                if value is None:
                    return None
                continue
            try:
                return check_type(value, alt, key)
            except ConfigError:
                pass
        raise _wrong(value, tp, key)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}, not {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(value, tp, key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _wrong(value, tp, key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(value, tp, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(value, tp, key)
    if origin in (list, Sequence, typing.Sequence, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _wrong(value, tp, key)
        inner = args[0] if args else Any
        return [check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(value, tp, key)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(check_type(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (dict, Mapping, typing.Mapping, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise _wrong(value, tp, key)
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _wrong(value, tp, key)
    return value


def _wrong(value: Any, tp: Any, key: str) -> ConfigError:
    return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    """The constraints of a field's metadata: ``choices``, ``min``, ``gt``, ``max``, ``lt``."""
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(
            f"{key}: must be one of {', '.join(map(str, meta['choices']))}, "
            f"not {value!r}{nearest(value, map(str, meta['choices']))}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value != value:  # NaN compares false with every bound: it would pass them all
        raise ConfigError(f"{key}: must be a number, not NaN")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, not {value}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"{key}: must be > {meta['gt']}, not {value}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']}, not {value}")
    if "lt" in meta and value >= meta["lt"]:
        raise ConfigError(f"{key}: must be < {meta['lt']}, not {value}")


def check_section(
    section: Any, keys: Mapping[str, Tuple[Any, Mapping[str, Any]]], where: str, required: Sequence[str] = ()
) -> Dict[str, Any]:
    """A mapping whose keys are ``keys`` (name -> (type, range)): names, types and ranges checked."""
    section = check_mapping(section, where)
    check_keys(section, keys, where)
    for k in required:
        if k not in section:
            raise ConfigError(f"{where}.{k}: missing")
    for k, v in section.items():
        tp, meta = keys[k]
        check_range(check_type(v, tp, f"{where}.{k}"), meta, f"{where}.{k}")
    return section


def check_fields(obj: Any, where: str) -> None:
    """Type- and range-check (and normalise) every field of a dataclass instance in place."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = _join(where, f.name)
        value = check_type(getattr(obj, f.name), hints.get(f.name, Any), key)
        check_range(value, f.metadata, key)
        object.__setattr__(obj, f.name, value)


T = typing.TypeVar("T")


def from_dict(cls: Callable[..., T], data: Any, where: str) -> T:
    """``cls(**data)`` for a dataclass ``cls``: unknown keys refused with the nearest valid name,
    missing required keys named, types and ranges checked (by ``cls.__post_init__`` calling
    :func:`check_fields`, or here)."""
    data = check_mapping(data, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_keys(data, fields, where)
    missing = [
        n
        for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(_join(where, m) for m in missing)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for k, v in data.items():
        key = _join(where, k)
        values[k] = check_type(v, hints.get(k, Any), key)
        check_range(values[k], fields[k].metadata, key)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def check_kwargs(
    fn: Callable[..., Any],
    kwargs: Any,
    where: str,
    skip: Sequence[str] = (),
    extra: Optional[Mapping[str, Any]] = None,
    defaults: bool = False,
    ranges: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> Dict[str, Any]:
    """``kwargs`` checked against ``fn``'s keyword parameters (names, and types from its annotations);
    ``skip``: parameters the caller fills in; ``extra``: more accepted names -> types (what ``**kwargs``
    passes on); ``ranges``: name -> :func:`check_range` constraints (applied to each element of a list).
    Returns the normalised keyword arguments (``defaults``: with every default filled in)."""
    kwargs = check_mapping(kwargs, where)
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: check names only
        hints = {}
    params = {
        n: hints.get(n, Any)
        for n, p in sig.parameters.items()
        if n not in skip and n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    params.update(extra or {})
    check_keys(kwargs, params, where)
    out = {k: check_type(v, params[k], _join(where, k)) for k, v in kwargs.items()}
    for k, meta in (ranges or {}).items():
        value = out.get(k)
        for i, v in enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]:
            check_range(v, meta, _join(where, k) + ("" if i is None else f"[{i}]"))
    if defaults:
        for n, p in sig.parameters.items():
            if n in params and n not in out and p.default is not p.empty:
                out[n] = p.default
    return out


def to_plain(obj: Any) -> Any:
    """Dataclasses, tuples and mappings as plain JSON/YAML-safe data (what checkpoints store)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def flatten(config: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    if isinstance(config, Mapping) and config:
        out: Dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, _join(prefix, k)))
        return out
    return {prefix: config}


def config_changes(old: Any, new: Any) -> Dict[str, tuple]:
    """``key -> (old value, new value)`` for every dotted key whose value differs."""
    a, b = flatten(to_plain(old)), flatten(to_plain(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
