"""The trace format as data, derived from the TypedDicts of :mod:`rlm_graph.observe.events`.

``python -m rlm_graph.observe.schema > docs/trajectory.schema.json`` writes the JSON
schema of a trace line; ``python -m rlm_graph.observe.schema --table`` prints the event
table of docs/trajectory.md. tests/observe/test_events.py fails when a committed copy
differs from what the types say, so a field added to an event reaches the docs or the
suite goes red. :func:`event_from` reads an event line of a trace file back into a typed
event, tolerating missing fields.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Mapping
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from rlm_graph.models.usage import Usage
from rlm_graph.observe.events import Doc, Event, TraceHeader, TraceResult

EVENT_TYPES: dict[str, type] = {get_args(get_type_hints(t)["event"])[0]: t for t in get_args(Event)}
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
EMPTY = {str: "", int: 0, float: 0.0, bool: False}
FIRST = ("event", "depth", "ts", "path")  # then each kind's own fields, as declared

# Usage is a plain dict[str, dict[str, int]] (models/usage.py): its count names are here.
USAGE: dict[str, Any] = {
    "description": "Tokens per model name.",
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "calls": {"type": "integer", "minimum": 0},
            "input_tokens": {"type": "integer", "minimum": 0},
            "output_tokens": {"type": "integer", "minimum": 0},
            "cached_tokens": {
                "type": "integer",
                "minimum": 0,
                "description": "part of input_tokens served from the provider's cache",
            },
        },
        "additionalProperties": {"type": "integer"},
    },
}


def fields(cls: type) -> dict[str, Any]:
    """A TypedDict's fields and their annotated types, the common ones first."""
    hints = get_type_hints(cls, include_extras=True)
    rank = {name: FIRST.index(name) if name in FIRST else len(FIRST) for name in hints}
    return dict(sorted(hints.items(), key=lambda item: rank[item[0]]))


def unwrap(hint: Any) -> tuple[Any, Doc | None]:
    """A field's type without ``NotRequired`` and ``Annotated``, and its :class:`Doc`."""
    doc = None
    while get_origin(hint) in (NotRequired, Annotated):
        hint, *metadata = get_args(hint)
        doc = next((m for m in metadata if isinstance(m, Doc)), doc)
    return hint, doc


def summary(cls: type) -> str:
    """A TypedDict's own docstring on one line."""
    return " ".join(inspect.cleandoc(cls.__dict__.get("__doc__") or "").split())


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of a field's type."""
    origin, args = get_origin(hint), get_args(hint)
    if hint == Usage:
        return {"$ref": "#/$defs/usage"}
    if hint is Any:
        return {}
    if hint in SCALARS:
        return {"type": SCALARS[hint]}
    if origin is Literal:
        return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0])}
    if origin is dict:
        values = {} if args[1] is Any else {"additionalProperties": type_schema(args[1])}
        return {"type": "object", **values}
    if origin in (Union, types.UnionType) and type(None) in args:
        (inner,) = [type_schema(a) for a in args if a is not type(None)]
        if list(inner) == ["type"]:
            return {"type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if is_typeddict(hint):
        return object_schema(hint)
    raise TypeError(f"no JSON schema for {hint!r}")


def object_schema(cls: type, tag: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON schema of a TypedDict: every field, no other (``tag``: a fixed field first)."""
    properties = {name: {"const": value} for name, value in (tag or {}).items()}
    for name, hint in fields(cls).items():
        field, doc = unwrap(hint)
        described = {"description": doc.text} if doc and doc.text else {}
        properties[name] = {**type_schema(field), **described, **(doc.schema if doc else {})}
    required = [name for name in properties if name in (tag or {}) or name in required_keys(cls)]
    schema: dict[str, Any] = {"description": summary(cls)} if summary(cls) else {}
    schema["type"] = "object"
    if required:
        schema["required"] = required
    return {**schema, "properties": properties, "additionalProperties": False}


def required_keys(cls: type) -> frozenset[str]:
    """The keys a TypedDict requires."""
    keys: frozenset[str] = cls.__required_keys__  # type: ignore[attr-defined]
    return keys


def trace_schema() -> dict[str, Any]:
    """The JSON schema (2020-12) of one line of a trace file."""
    defs = {"usage": USAGE, "run": object_schema(TraceHeader), "result": object_schema(TraceResult)}
    for kind, cls in EVENT_TYPES.items():
        defs[kind] = object_schema(cls, tag={"type": "event"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "rlm-graph/trajectory.schema.json",
        "title": "One line of an rlm-graph trajectory (trace) file, version 1",
        "description": (
            "A trace is JSON lines: one 'run' header, then 'event' lines in the order they "
            "happened, then (if the run finished) one 'result' line. See docs/trajectory.md. "
            "Generated by python -m rlm_graph.observe.schema from rlm_graph/observe/events.py."
        ),
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in defs if name != "usage"],
        "$defs": defs,
    }


def common_fields() -> list[str]:
    """The fields every event has, besides ``event`` itself."""
    shared = set.intersection(*(set(fields(cls)) for cls in EVENT_TYPES.values()))
    return [name for name in FIRST if name in shared]


def event_table() -> str:
    """The Markdown table of the events and their fields, as docs/trajectory.md shows it."""
    common = common_fields()
    shown = ", ".join(f"`{name}`" for name in common if name != "event")
    lines = [f"| event | emitted when | fields beyond {shown} |", "|---|---|---|"]
    for kind, cls in EVENT_TYPES.items():
        own = []
        for name, hint in fields(cls).items():
            if name in common:
                continue
            notes = [] if name in required_keys(cls) else ["optional"]
            if (doc := unwrap(hint)[1]) and doc.text:
                notes.append(doc.text)
            own.append(f"`{name}`" + (f" ({'; '.join(notes)})" if notes else ""))
        lines.append(f"| `{kind}` | {summary(cls)} | {', '.join(own)} |")
    return "\n".join(lines) + "\n"


def empty(hint: Any) -> Any:
    """The value a field missing from a trace line reads as: "", 0, False, {}, [] or None."""
    field, _ = unwrap(hint)
    if field in EMPTY:
        return EMPTY[field]
    if get_origin(field) is Literal:
        return get_args(field)[0]
    if get_origin(field) in (list, dict):
        return get_origin(field)()
    return None


def event_from(record: Mapping[str, Any]) -> Event | None:
    """An event line of a trace file as a typed event; None for a kind this version lacks.

    Trace files come from disk (``rlm view``): written by an older version or edited by
    hand, so a field may be missing. It reads as its type's empty value (a Literal as its
    first value: ``cell_end.kind`` as ``model``), and readers find every field the type
    promises; the rest of the line is kept as it is.
    """
    cls = EVENT_TYPES.get(record.get("event", ""))
    if cls is None:
        return None
    hints = fields(cls)
    missing = {name: empty(hints[name]) for name in required_keys(cls) if name not in record}
    return cast(Event, {**missing, **record})


def dumps(value: Any, indent: int = 0, column: int = 0) -> str:
    """JSON as a person writes it: what fits on the line from ``column`` to 100 stays on it."""
    flat = json.dumps(value, ensure_ascii=False)
    if column + len(flat) <= 100 or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list):
        items = [pad + dumps(item, indent + 2, len(pad)) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    keys = {name: f"{json.dumps(name)}: " for name in value}
    items = [pad + keys[k] + dumps(v, indent + 2, len(pad + keys[k])) for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def main(argv: list[str]) -> int:
    """Print the schema (or, with ``--table``, the docs' event table)."""
    if argv == ["--table"]:
        sys.stdout.write(event_table())
    elif not argv:
        sys.stdout.write(dumps(trace_schema()) + "\n")
    else:
        print("usage: python -m rlm_graph.observe.schema [--table]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
