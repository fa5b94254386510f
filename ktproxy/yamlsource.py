"""YAML reading that remembers where every value came from.

pyyaml's `safe_load` forgets line numbers and silently keeps the last of two
duplicate keys. Config errors must point at a line, and a duplicated key is almost
always a mistake, so we compose the node tree ourselves and build plain Python data
plus a map from each value's path to its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


class YamlSyntaxError(Exception):
    """The file is not valid YAML; carries the 1-based line of the problem."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class SourceMap:
    """Lines (1-based) of values and of mapping keys, by path."""

    value_lines: dict[Path, int] = field(default_factory=dict)
    key_lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int]] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        """Line of the value at `path`, else of the nearest ancestor that has one."""
        while True:
            if path in self.key_lines:
                return self.key_lines[path]
            if path in self.value_lines:
                return self.value_lines[path]
            if not path:
                return 1
            path = path[:-1]


def format_path(path: Path) -> str:
    """`("providers", "targets", 0, "id")` -> `$.providers.targets[0].id`."""
    out = ["$"]
    for part in path:
        out.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(out)


def load_yaml(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data and its source map."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {exc}", 1) from None
    smap = SourceMap()
    if node is None:
        return None, smap
    constructor = yaml.SafeLoader("")
    return _build(node, (), smap, constructor), smap


def _build(node: yaml.Node, path: Path, smap: SourceMap, loader: yaml.SafeLoader) -> Any:
    smap.value_lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (`<<: *base`)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _build(key_node, path + ("<key>",), smap, loader)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child: Path = path + (str(key),)
            if key in out:
                smap.duplicates.append((child, key_node.start_mark.line + 1))
            smap.key_lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, smap, loader)
        smap.value_lines.pop(path + ("<key>",), None)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), smap, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
