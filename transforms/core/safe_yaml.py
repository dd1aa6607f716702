"""YAML reading with limits, and short renderings of user values for error messages.

PyYAML's ``safe_load`` shares aliased nodes, so a "billion laughs" document
loads quickly but expands exponentially when anything walks or formats it.
Every YAML file this tool reads (``--config``, preprocessing specs, fitted
specs) goes through :func:`read_yaml`, which caps the document size and the
number of aliases; error messages format values with :func:`short_repr` only.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from keras_batch_score.transforms.core.errors import ConfigError

MAX_YAML_BYTES = 1 << 20
"""Largest YAML document read (1 MiB): configs and specs are a few KB."""

MAX_YAML_ALIASES = 100
"""Most ``*alias`` references in one document."""

MAX_YAML_NODES = 100_000
"""Most values in one document once every alias is expanded."""

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxstring = _REPR.maxother = 60


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a few elements and characters (safe on shared, deep structures)."""
    return _REPR.repr(value)


class _LimitedLoader(yaml.SafeLoader):
    """A SafeLoader with the alias and expanded-size limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name references)")
        return super().compose_node(parent, index)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"its aliases expand to more than {MAX_YAML_NODES:,} values (a 'billion laughs' document?)"
            )
        return self.construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], active: set[int]) -> int:
    """Number of values in ``node`` with every alias expanded; shared nodes are sized once."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise yaml.YAMLError("an alias refers to the value that contains it")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, active) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, sizes, active) + _expanded_size(v, sizes, active)
            if size > MAX_YAML_NODES:
                break
    active.discard(key)
    sizes[key] = size
    return size


def load_yaml_text(text: str, source: str) -> Any:
    """Parses one YAML document with the alias limit.

    Raises:
        ConfigError: naming ``source`` when the text is not valid YAML or has too many aliases.
    """
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {_first_line(e)}") from None
    finally:
        loader.dispose()


def read_yaml(path: str, what: str) -> Any:
    """Reads a YAML file through Beam FileSystems (so ``gs://`` works), within the limits.

    Args:
        path: The file.
        what: What the file is, for messages (``config file``, ``preprocessing spec``).

    Raises:
        ConfigError: if the file cannot be read, is larger than ``MAX_YAML_BYTES``,
            or is not valid YAML.
    """
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except Exception as e:  # Beam wraps missing files in BeamIOError
        raise ConfigError(f"{what} {path} cannot be read: {_first_line(e)}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_YAML_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    return load_yaml_text(text, f"{what} {path}")


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return " ".join(line.strip() for line in lines[:3])[:300] or type(e).__name__
