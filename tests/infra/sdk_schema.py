"""The pulumi-aws SDK's own input types, to check what the program declares against them.

Under mocks any property name is accepted: a misspelt or wrongly nested key (``{"prefixx": ...}`` in a lifecycle
filter, ``serde_info`` for ``ser_de_info``) reaches the mock as an extra input and is silently dropped by the real
provider. These helpers walk the ``...Args`` input classes of the installed SDK (their ``@pulumi.getter`` names
are the wire names the mocks record) and report every declared key the SDK does not know, at any depth.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import sys
import typing
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws
from pulumi._types import _py_properties

__all__ = ["args_class", "unknown_inputs"]

_SDK = Path(pulumi_aws.__file__).parent
PROVIDER_TYPE = "pulumi:providers:aws"

# ("object", input class) | ("list", item kind) | ("leaf", None)
Kind = tuple[str, Any]
_LEAF: Kind = ("leaf", None)


@functools.cache
def args_class(resource_type: str) -> type:
    """The ``<Resource>Args`` (or ``<Resource>InitArgs``) class of a resource type token."""
    if resource_type == PROVIDER_TYPE:
        return pulumi_aws.ProviderArgs
    _, module_path, class_name = resource_type.split(":")
    package = module_path.split("/")[0]
    directory = {"lambda": "lambda_", "index": ""}.get(package, package)
    marker = f'@pulumi.type_token("{resource_type}")'
    for source in sorted((_SDK / directory).glob("*.py")):
        if marker not in source.read_text(encoding="utf-8"):
            continue
        module = importlib.import_module(".".join(filter(None, ["pulumi_aws", directory, source.stem])))
        for suffix in ("Args", "InitArgs"):
            candidate = getattr(module, f"{class_name}{suffix}", None)
            if isinstance(candidate, type) and candidate.__module__ == module.__name__:
                return candidate
    raise LookupError(f"no input class for {resource_type} in {_SDK}")


def _kind(annotation: Any) -> Kind:
    """What a property holds, seen through Input/Optional/Awaitable/Output wrappers."""
    if isinstance(annotation, type) and _py_properties(annotation):
        return ("object", annotation)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (list, collections.abc.Sequence):
        return ("list", _kind(arguments[0]))
    if origin in (dict, collections.abc.Mapping):
        return _LEAF  # free-form maps (tags, environment variables, parameters)
    for argument in arguments:
        kind = _kind(argument)
        if kind != _LEAF:
            return kind
    return _LEAF


@functools.cache
def _properties(input_class: type) -> dict[str, Kind]:
    """Wire name -> kind of every property of an SDK input class."""
    namespace = {"Output": pulumi.Output, "T": Any, **vars(sys.modules[input_class.__module__])}
    properties = {}
    for _, wire_name, prop in _py_properties(input_class):
        hints = typing.get_type_hints(prop.fget, globalns=namespace)
        properties[wire_name] = _kind(hints["return"])
    return properties


def _walk(value: Any, kind: Kind, path: str, found: list[str]) -> None:
    shape, inner = kind
    if shape == "object" and isinstance(value, dict):
        known = _properties(inner)
        for key, item in value.items():
            if key not in known:
                found.append(f"{path}.{key} (known: {', '.join(sorted(known))})")
            else:
                _walk(item, known[key], f"{path}.{key}", found)
    elif shape == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, inner, f"{path}[{index}]", found)


def unknown_inputs(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    """Declared input keys (nested too) that the SDK's input types do not have, as ``type.path`` strings."""
    found: list[str] = []
    _walk(inputs, ("object", args_class(resource_type)), resource_type, found)
    return found
