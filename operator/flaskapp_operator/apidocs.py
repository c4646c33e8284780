"""The API reference (docs/api.md), generated from the model: `make docs` writes it, a unit test keeps it current.

It walks the CRD's own schema (crd.py, generated from api.py) guided by the model's classes: the classes give
the section names, the order and which fields are Kubernetes' types; every type, default, bound and description
comes from the schema the API server gets. One section per class, as crd-ref-docs lays out Go types.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from . import api
from .crd import crd
from .kubernetes_types import kubernetes_version
from .schema import QUANTITY_MAX_LENGTH, QUANTITY_PATTERN, IntOrAuto, Quantity, _hints, _unwrap_optional, json_name

HEADER = "<!-- Generated from operator/flaskapp_operator/api.py by `make docs`; do not edit. -->"
# The status has no model class: its objects are named here as Kubernetes names them (metav1.Condition).
STATUS_SECTION_TITLES = {"status": "FlaskAppStatus", "status.conditions[]": "Condition"}
# Patterns many fields share, named once under Value types instead of spelled out in every row.
NAMED_PATTERNS = {
    api.IMAGE_REFERENCE: ("image reference", "A container image as the distribution/reference grammar defines it: "
                                             "`[registry[:port]/]path[:tag][@digest]`."),
    api.DNS_LABEL: ("DNS label", "An RFC 1123 label: lowercase letters, digits and `-`, a letter or digit at "
                                 "each end."),
    api.DNS_SUBDOMAIN: ("DNS subdomain", "RFC 1123 labels joined by dots."),
    api.HOST: ("host name", "A DNS subdomain, or a wildcard `*.` followed by one."),
}


@dataclass
class Row:
    field: str
    type: str
    default: str
    validation: list[str]
    description: str


@dataclass
class Section:
    title: str
    paths: list[str]
    rows: list[Row]
    rules: list[str]


def kubernetes_reference(kind: str) -> str:
    """The Kubernetes API reference of a core/v1 type, for the release whose schemas the CRD embeds."""
    minor = ".".join(kubernetes_version().split(".")[:2])
    return f"https://kubernetes.io/docs/reference/generated/kubernetes-api/{minor}/#{kind.lower()}-v1-core"


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{text}`"


def _text(text: str) -> str:
    """Prose: `<pool>` outside code spans is escaped, or Markdown takes it for an HTML tag."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _table_row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"  # a pipe ends a cell, even in code


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lowercase, spaces as dashes, other punctuation dropped."""
    return "#" + re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _pattern(pattern: str) -> str:
    if pattern not in NAMED_PATTERNS:
        return f"matches {_code(pattern)}"
    name = NAMED_PATTERNS[pattern][0]
    return f"{'an' if name[0] in 'aeiou' else 'a'} [{name}]({_anchor(name)})"


def bounds(prop: dict[str, Any]) -> list[str]:
    """A schema's enum and range in words (OpenAPI and JSON Schema spell them alike; hack/chart_readme.py too)."""
    out = []
    if "enum" in prop:
        out.append("one of " + ", ".join(_code(v) for v in prop["enum"]))
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        out.append(f"{low} to {high}")
    elif low is not None:
        out.append(f"at least {low}")
    elif high is not None:
        out.append(f"at most {high}")
    return out


def _validation(prop: dict[str, Any], value_type: Any = None, required: bool = False) -> list[str]:
    """The schema's bounds in words; a value type's own pattern is documented once, under Value types."""
    out = (["**required**"] if required else []) + bounds(prop)
    if "pattern" in prop and value_type not in (Quantity, IntOrAuto):
        out.append(_pattern(prop["pattern"]))
    if "minLength" in prop:
        out.append("at least " + _count(prop["minLength"], "character"))
    if "maxLength" in prop and value_type is not Quantity:
        out.append("at most " + _count(prop["maxLength"], "character"))
    if "minItems" in prop:
        out.append("at least " + _count(prop["minItems"], "item"))
    if "maxItems" in prop:
        out.append("at most " + _count(prop["maxItems"], "item"))
    if "x-kubernetes-list-map-keys" in prop:
        out.append("items unique by " + ", ".join(_code(k) for k in prop["x-kubernetes-list-map-keys"]))
    items = prop.get("items") or {}
    if prop.get("type") == "array" and "pattern" in items and "properties" not in items:
        out.append(f"each item: {_pattern(items['pattern'])}")
    if prop.get("type") == "array" and "maxLength" in items and "properties" not in items:
        out.append("each item at most " + _count(items["maxLength"], "character"))
    return out


def _rules(schema: dict[str, Any]) -> list[str]:
    return [(_code(rule["fieldPath"].lstrip(".")) + ": " if "fieldPath" in rule else "") + _text(rule["message"])
            for rule in schema.get("x-kubernetes-validations", [])]


# ---------------------------------------------------------------------------------------------------------
# The spec: the model's classes over the CRD schema


def _value_type(tp: Any, kubernetes: str | None) -> str:
    """A field's type in words, linking to its section (or to Kubernetes' reference for Kubernetes' types)."""
    if kubernetes:
        return f"a Kubernetes [{kubernetes}]({kubernetes_reference(kubernetes)})"
    if tp is Quantity:
        return "[quantity](#quantity)"
    if tp is IntOrAuto:
        return "[integer or auto](#integer-or-auto)"
    if tp in (str, bool, int):
        return {str: "string", bool: "boolean", int: "integer"}[tp]
    if get_origin(tp) is dict:
        _key, value = get_args(tp)
        return "object" if value is Any else f"map of {_value_type(value, None)}"
    if dataclasses.is_dataclass(tp):
        return f"[{tp.__name__}]({_anchor(tp.__name__)})"
    raise TypeError(f"no documented type for {tp!r}")


def _type(tp: Any, kubernetes: str | None) -> str:
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        return "list of " + _value_type(item, kubernetes).removeprefix("a ")
    return _value_type(tp, kubernetes)


def _default(tp: Any, prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    if dataclasses.is_dataclass(tp):
        return "its fields' defaults"  # the CRD spells the whole object out; its section gives each default
    return _code(prop["default"])


def _model_sections(cls: type, schema: dict[str, Any], path: str, sections: dict[str, Section]) -> None:
    """Add `cls`'s section (once, at its first path) and its nested classes', depth first in field order."""
    first = cls.__name__ not in sections
    if first:
        sections[cls.__name__] = Section(cls.__name__, [], [], _rules(schema))
    section = sections[cls.__name__]
    section.paths.append(path)
    hints = _hints(cls)
    required = set(schema.get("required", []))
    for f in dataclasses.fields(cls):
        name = json_name(f)
        prop = schema["properties"][name]
        tp, _optional = _unwrap_optional(hints[f.name])
        kubernetes = f.metadata.get("kubernetes")
        if first:
            section.rows.append(Row(name, _type(tp, kubernetes), _default(tp, prop),
                                    _validation(prop, tp, name in required), _text(prop["description"])))
        if kubernetes:
            continue  # Kubernetes documents its own types
        if get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]):
            _model_sections(get_args(tp)[0], prop["items"], f"{path}.{name}[]", sections)
        elif dataclasses.is_dataclass(tp):
            _model_sections(tp, prop, f"{path}.{name}", sections)


# ---------------------------------------------------------------------------------------------------------
# The status: a plain schema, no model class


def _schema_type(prop: dict[str, Any], path: str) -> str:
    if prop.get("type") == "array":
        items = prop["items"]
        if "properties" in items:
            title = STATUS_SECTION_TITLES[f"{path}[]"]
            return f"list of [{title}]({_anchor(title)})"
        return f"list of {_schema_type(items, path + '[]')}"
    kind = prop.get("type", "object")
    return f"{kind} ({prop['format']})" if "format" in prop else kind


def _schema_sections(schema: dict[str, Any], path: str, sections: dict[str, Section]) -> None:
    title = STATUS_SECTION_TITLES[path]
    section = sections[title] = Section(title, [path], [], _rules(schema))
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        section.rows.append(Row(name, _schema_type(prop, f"{path}.{name}"), "",
                                _validation(prop, required=name in required), _text(prop.get("description", ""))))
        if prop.get("type") == "array" and "properties" in prop["items"]:
            _schema_sections(prop["items"], f"{path}.{name}[]", sections)


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _section_markdown(section: Section) -> list[str]:
    lines = [f"### {section.title}", ""]
    if len(section.paths) == 1:
        lines += [f"At {_code(section.paths[0])}.", ""]
        prefix = section.paths[0] + "."
    else:  # a shared class: its rows name each field relative to every path it is used at
        lines += ["At " + ", ".join(_code(p) for p in section.paths) + "; the fields below are relative to each.",
                  ""]
        prefix = ""
    lines += ["| Field | Type | Default | Validation | Description |", "|---|---|---|---|---|"]
    for row in section.rows:
        lines.append(_table_row(_code(prefix + row.field), row.type, row.default, "; ".join(row.validation),
                                row.description))
    if section.rules:
        lines += ["", "Rules:", ""]
        lines += [f"- {rule}" for rule in section.rules]
    return lines + [""]


def _resource_markdown(version: dict[str, Any], names: dict[str, Any], root: dict[str, Any]) -> list[str]:
    scale = version["subresources"]["scale"]
    lines = [
        f"## {names['kind']}", "",
        _text(root["description"]), "",
        "| | |", "|---|---|",
        f"| API version | {_code(api.GROUP + '/' + version['name'])} |",
        f"| Kind | {_code(names['kind'])} (list: {_code(names['listKind'])}) |",
        f"| Scope | Namespaced |",
        f"| Names | {_code(names['plural'])}, {_code(names['singular'])}, short "
        + ", ".join(_code(n) for n in names["shortNames"]) + ", categories "
        + ", ".join(_code(c) for c in names["categories"]) + " |",
        f"| Subresources | `status`; `scale` ({_code(scale['specReplicasPath'])} / "
        f"{_code(scale['statusReplicasPath'])}, selector {_code(scale['labelSelectorPath'])}) |",
        "",
        "Rules on the object:", "",
    ]
    lines += [f"- {rule}" for rule in _rules(root)]
    lines += ["", "Columns of `kubectl get flaskapps` (`-o wide` adds those marked wide):", "",
              "| Column | JSON path | Description |", "|---|---|---|"]
    for column in version["additionalPrinterColumns"]:
        wide = " (wide)" if column.get("priority") else ""
        lines.append(_table_row(column["name"] + wide, _code(column["jsonPath"]),
                                _text(column.get("description", ""))))
    return lines + [""]


def _value_types_markdown() -> list[str]:
    return [
        "## Value types", "",
        "### quantity", "",
        "A Kubernetes resource quantity, as a string or an integer (`500m`, `2`, `512Mi`, `1Gi`): a positive "
        f"number with an optional SI, binary or exponent suffix, matching {_code(QUANTITY_PATTERN)}, "
        f"at most {QUANTITY_MAX_LENGTH} characters.", "",
        "### integer or auto", "",
        "The string `auto` (the tuning engine derives the number from the container's CPU) or an integer within "
        "the field's bounds.", "",
    ] + [line for pattern, (name, meaning) in NAMED_PATTERNS.items()
         for line in (f"### {name}", "", f"{meaning} Matches {_code(pattern)}.", "")]


def api_reference() -> str:
    """docs/api.md: the FlaskApp resource, then every spec and status field, section by section."""
    definition = crd()
    version = definition["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    spec_sections: dict[str, Section] = {}
    _model_sections(api.FlaskAppSpec, root["properties"]["spec"], "spec", spec_sections)
    status_sections: dict[str, Section] = {}
    _schema_sections(root["properties"]["status"], "status", status_sections)

    lines = [HEADER, "", f"# {api.KIND} API reference", "",
             f"Every field of `{api.GROUP}/{api.VERSION}` {api.KIND}, in the order of the model "
             "(`operator/flaskapp_operator/api.py`), from the schema the CRD carries. `kubectl explain "
             "flaskapp.spec` shows the same descriptions in a cluster. Fields typed as Kubernetes' own "
             f"(containers, volumes, affinity...) follow the Kubernetes {kubernetes_version()} API reference "
             "they link to. A section's rules are cross-field checks: the API server checks them (CEL), and so "
             "do `flaskapp-operator render` and the operator.", ""]
    lines += _resource_markdown(version, definition["spec"]["names"], root)
    lines += _value_types_markdown()
    lines += ["## Spec", "", _text(root["properties"]["spec"]["description"]), "",
              "Sections: " + ", ".join(f"[{title}]({_anchor(title)})" for title in spec_sections) + ".", ""]
    for section in spec_sections.values():
        lines += _section_markdown(section)
    lines += ["## Status", "", _text(root["properties"]["status"]["description"]), ""]
    for section in status_sections.values():
        lines += _section_markdown(section)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"
