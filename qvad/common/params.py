"""Loading and checking params.yaml, so a bad value fails at the start with its key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A params.yaml value that cannot work; the message names the key."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a dict."""
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


def require(cond: bool, key: str, message: str) -> None:
    """Raise :class:`ParamsError` naming ``key`` unless ``cond`` holds."""
    if not cond:
        raise ParamsError(f"params.yaml: {key}: {message}")


def choice(params: dict, key: str, options: tuple[str, ...]) -> str:
    """The value at dotted ``key``, checked against ``options``."""
    value = get(params, key)
    require(value in options, key, f"must be one of {options}, got {value!r}")
    return value


def get(params: dict, key: str) -> Any:
    """The value at dotted ``key`` (e.g. ``'mix.snrs_db'``), naming the key if absent."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml: missing key {key!r}")
        node = node[part]
    return node
