"""A small declarative layer that makes the Python model the single source of truth for the API.

Each dataclass field carries its description, default and bounds; each cross-field rule carries its CEL
expression *and* the equivalent Python check. From that one declaration this module:

- generates the structural OpenAPI v3 schema of the CRD (`openapi_schema`), and
- parses a plain dict into frozen dataclasses with the same defaults and the same validation
  (`parse`), reporting every error by its field path, as the API server would.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, NewType, Optional

from kubernetes.utils.quantity import parse_quantity

from .kubernetes_types import crd_schema, validation_errors

Quantity = NewType("Quantity", str)
"""A Kubernetes resource quantity ("500m", "1Gi", 2)."""

IntOrAuto = NewType("IntOrAuto", object)
"""Either the string "auto" (the tuning engine decides) or a positive integer."""

QUANTITY_MAX_LENGTH = 32
# A positive Kubernetes quantity: 0 (or 0.0, 0m) is refused, a zero CPU or memory sizes nothing.
# Kubernetes' grammar (resource.Quantity): a decimal number, then a decimal SI suffix, a binary suffix or an
# exponent (1e9).
QUANTITY_PATTERN = (r"^(0*[1-9][0-9]*(\.[0-9]+)?|0*\.[0-9]*[1-9][0-9]*)"
                    r"(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+)?$")


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the API server, `check` for the CLI and the operator, same message."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str = ""  # where the error points, relative to the object the rule sits on (".maxReplicas")


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """Invalid input; `errors` names each offending field by its path."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def field(description: str, *, default: Any = MISSING, json: str | None = None,
          enum: tuple[str, ...] | None = None, minimum: int | None = None, maximum: int | None = None,
          pattern: str | None = None, max_length: int | None = None, min_length: int | None = None,
          min_items: int | None = None, max_items: int | None = None, list_map_key: str | None = None,
          item_pattern: str | None = None, item_max_length: int | None = None,
          preserve_unknown: bool = False, kubernetes: str | None = None,
          check: Callable[[Any], Optional[str]] | None = None, pattern_message: str | None = None) -> Any:
    """Declare a model field; a mutable or nested default is given as a factory (a class or `list`).

    `kubernetes`: the field (or each item of a list) is that core/v1 type (kubernetes_types.py).
    `check`: a grammar the CRD cannot express (a PCRE regex nginx must compile): the value's problem, or None;
    the CLI and the operator refuse the value with that message, the API server admits it.
    `pattern_message`: what a value that does not match `pattern` is told, instead of the regex."""
    meta = {k: v for k, v in dict(
        description=description, json=json, enum=enum, minimum=minimum, maximum=maximum,
        pattern=pattern, max_length=max_length, min_length=min_length, min_items=min_items,
        max_items=max_items, list_map_key=list_map_key, item_pattern=item_pattern,
        item_max_length=item_max_length, preserve_unknown=preserve_unknown, kubernetes=kubernetes,
        check=check, pattern_message=pattern_message).items()
        # Not `v not in (None, False)`: 0 == False, which silently dropped every `minimum=0`.
        if v is not None and v is not False}
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, type) or default is list or default is dict:
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def rules(*declared: Rule) -> Callable[[type], type]:
    """Attach cross-field rules to a model class."""

    def attach(cls: type) -> type:
        cls.__rules__ = declared  # type: ignore[attr-defined]
        return cls

    return attach


def json_name(f: dataclasses.Field) -> str:
    if "json" in f.metadata:
        return f.metadata["json"]
    head, *rest = f.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    # Resolving string annotations compiles each one: 60 % of a reconcile pass before this cache (cProfile).
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------------------------------------------------
# Schema generation


def openapi_schema(cls: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model class (the CRD's `spec`)."""
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        tp, _optional = _unwrap_optional(hints[f.name])
        prop = _type_schema(tp)
        if "kubernetes" in f.metadata:
            kind_schema = crd_schema(f.metadata["kubernetes"])
            if prop["type"] == "array":
                prop["items"] = kind_schema
            else:
                prop = kind_schema
        prop["description"] = f.metadata["description"]
        _add_bounds(prop, f.metadata)
        if f.default is not MISSING and f.default is not None:
            prop["default"] = to_dict(f.default)  # a tuple default is a list in the API
        elif f.default_factory is not MISSING and dataclasses.is_dataclass(f.default_factory):  # type: ignore[misc]
            # The full default object: the API server checks defaults against CEL rules as they are.
            prop["default"] = to_dict(f.default_factory())  # type: ignore[misc]
        if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            required.append(json_name(f))
        properties[json_name(f)] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    declared = getattr(cls, "__rules__", ())
    if declared:
        schema["x-kubernetes-validations"] = [
            {"rule": r.cel, "message": r.message, **({"fieldPath": r.field_path} if r.field_path else {})}
            for r in declared
        ]
    return schema


def _type_schema(tp: Any) -> dict[str, Any]:
    if tp is Quantity:
        # maxLength bounds the API server's cost estimate of the CEL rules that compare quantities.
        return {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN, "maxLength": QUANTITY_MAX_LENGTH}
    if tp is IntOrAuto:
        # "auto" or an integer: the pattern applies to strings only, the bounds to integers only.
        return {"x-kubernetes-int-or-string": True, "pattern": "^auto$"}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int32"}
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict:
        _key, value = typing.get_args(tp)
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if dataclasses.is_dataclass(tp):
        return openapi_schema(tp)
    raise TypeError(f"no schema for {tp!r}")


_BOUND_KEYS = {"enum": "enum", "minimum": "minimum", "maximum": "maximum", "pattern": "pattern",
               "max_length": "maxLength", "min_length": "minLength", "min_items": "minItems",
               "max_items": "maxItems"}


def _add_bounds(prop: dict[str, Any], meta: typing.Mapping[str, Any]) -> None:
    for key, schema_key in _BOUND_KEYS.items():
        if key in meta:
            prop[schema_key] = list(meta[key]) if key == "enum" else meta[key]
    if "list_map_key" in meta:  # a list keyed by this field: the API server rejects duplicates
        prop["x-kubernetes-list-type"] = "map"
        prop["x-kubernetes-list-map-keys"] = [meta["list_map_key"]]
    if meta.get("preserve_unknown"):
        prop["x-kubernetes-preserve-unknown-fields"] = True
    if "item_pattern" in meta:
        prop["items"]["pattern"] = meta["item_pattern"]
    if "item_max_length" in meta:  # also bounds the API server's cost estimate of CEL rules over the items
        prop["items"]["maxLength"] = meta["item_max_length"]


# ---------------------------------------------------------------------------------------------------------
# Parsing and validation


def parse(cls: type, data: Any, path: str = "spec") -> Any:
    """Parse `data` into `cls`, applying defaults and every rule; raise SpecError naming each bad field."""
    errors: list[FieldError] = []
    value = _parse_object(cls, data, path, errors)
    if errors:
        raise SpecError(errors)
    return value


def _parse_object(cls: type, data: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(data, dict):
        errors.append(FieldError(path, f"must be an object, got {_kind(data)}"))
        return None
    hints = _hints(cls)
    fields = {json_name(f): f for f in dataclasses.fields(cls)}
    for unknown in sorted(set(data) - set(fields), key=repr):  # YAML keys may be null or numbers
        errors.append(FieldError(f"{path}.{unknown}", "unknown field"))
    values: dict[str, Any] = {}
    before = len(errors)
    for name, f in fields.items():
        tp, optional = _unwrap_optional(hints[f.name])
        field_path = f"{path}.{name}"
        if name not in data or (data[name] is None and optional):
            if f.default is not MISSING:
                values[f.name] = f.default
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                factory = f.default_factory  # type: ignore[misc]
                values[f.name] = (_parse_object(factory, {}, field_path, errors)
                                  if dataclasses.is_dataclass(factory) else factory())
            else:
                errors.append(FieldError(field_path, "required field is missing"))
            continue
        values[f.name] = _parse_value(tp, data[name], field_path, errors)
        if "kubernetes" in f.metadata and values[f.name] is not None:
            value = values[f.name]
            items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
            for i, item in items:
                errors.extend(FieldError(p, m) for p, m in validation_errors(
                    f.metadata["kubernetes"], item, field_path if i is None else f"{field_path}[{i}]"))
        _check_bounds(values[f.name], f.metadata, field_path, errors)
    if len(errors) > before:
        return None
    obj = cls(**values)
    for rule in getattr(cls, "__rules__", ()):
        if not rule.check(obj):
            errors.append(FieldError(path + rule.field_path, rule.message))
    return obj


def _parse_value(tp: Any, raw: Any, path: str, errors: list[FieldError]) -> Any:
    if tp is Quantity:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)) or \
                not re.match(QUANTITY_PATTERN, str(raw)) or len(str(raw)) > QUANTITY_MAX_LENGTH:
            errors.append(FieldError(path, f"must be a positive quantity such as 500m or 1Gi, got {raw!r}"))
            return None
        parse_quantity(str(raw))
        return str(raw)
    if tp is IntOrAuto:
        if raw == "auto" or (isinstance(raw, int) and not isinstance(raw, bool)):
            return raw
        errors.append(FieldError(path, f'must be "auto" or an integer, got {raw!r}'))
        return None
    if tp in (str, bool, int):
        if type(raw) is not tp:
            errors.append(FieldError(path, f"must be {tp.__name__}, got {_kind(raw)}"))
            return None
        return raw
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(raw, list):
            errors.append(FieldError(path, f"must be a list, got {_kind(raw)}"))
            return None
        return tuple(_parse_value(item, v, f"{path}[{i}]", errors) for i, v in enumerate(raw))
    if origin is dict:
        _key, value = typing.get_args(tp)
        if not isinstance(raw, dict):
            errors.append(FieldError(path, f"must be an object, got {_kind(raw)}"))
            return None
        bad_keys = [k for k in raw if not isinstance(k, str)]
        if bad_keys:  # YAML allows null, number and boolean keys; a Kubernetes map has string keys only
            errors.append(FieldError(path, f"keys must be strings, got {bad_keys[0]!r} ({_kind(bad_keys[0])})"))
            return None
        if value is Any:
            return dict(raw)
        return {k: _parse_value(value, v, f"{path}.{k}", errors) for k, v in raw.items()}
    if dataclasses.is_dataclass(tp):
        return _parse_object(tp, raw, path, errors)
    raise TypeError(f"cannot parse {tp!r}")


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
    if value is None:
        return
    before = len(errors)
    if "enum" in meta and value not in meta["enum"]:
        errors.append(FieldError(path, f"must be one of {', '.join(meta['enum'])}, got {value!r}"))
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in meta and value < meta["minimum"]:
            errors.append(FieldError(path, f"must be >= {meta['minimum']}, got {value}"))
        if "maximum" in meta and value > meta["maximum"]:
            errors.append(FieldError(path, f"must be <= {meta['maximum']}, got {value}"))
    if isinstance(value, str):
        if "pattern" in meta and not re.search(meta["pattern"], value):
            errors.append(FieldError(path, f"{meta.get('pattern_message') or 'must match ' + meta['pattern']}, "
                                           f"got {value!r}"))
        if "max_length" in meta and len(value) > meta["max_length"]:
            errors.append(FieldError(path, f"must be at most {meta['max_length']} characters"))
        if "min_length" in meta and len(value) < meta["min_length"]:
            errors.append(FieldError(path, f"must be at least {meta['min_length']} characters"))
        problem = meta["check"](value) if "check" in meta and len(errors) == before else None
        if problem:
            errors.append(FieldError(path, problem))
    if isinstance(value, tuple):
        if "min_items" in meta and len(value) < meta["min_items"]:
            errors.append(FieldError(path, f"must have at least {meta['min_items']} item(s)"))
        if "max_items" in meta and len(value) > meta["max_items"]:
            errors.append(FieldError(path, f"must have at most {meta['max_items']} item(s)"))
        for i, item in enumerate(value):
            if "item_pattern" in meta and isinstance(item, str) and not re.search(meta["item_pattern"], item):
                errors.append(FieldError(f"{path}[{i}]", f"must match {meta['item_pattern']}, got {item!r}"))
            if "item_max_length" in meta and isinstance(item, str) and len(item) > meta["item_max_length"]:
                errors.append(FieldError(f"{path}[{i}]", f"must be at most {meta['item_max_length']} characters"))
        if "list_map_key" in meta:
            keys = [item.get(meta["list_map_key"]) if isinstance(item, dict) else getattr(item, meta["list_map_key"], None)
                    for item in value]
            for dup in sorted({k for k in keys if keys.count(k) > 1}):
                errors.append(FieldError(path, f"duplicate entries with {meta['list_map_key']} {dup!r}"))


def _kind(raw: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object", type(None): "null"}.get(type(raw), type(raw).__name__)


def to_dict(obj: Any) -> Any:
    """The JSON form of a parsed model (camelCase keys, defaults filled in)."""
    if dataclasses.is_dataclass(obj):
        return {json_name(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not None}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
