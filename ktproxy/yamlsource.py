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
    smap = SourceMap()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None, smap
        return _Builder(smap).build(node, ()), smap
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(f"invalid YAML: {_describe(exc)}", line) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {exc}", 1) from None


def _describe(exc: yaml.MarkedYAMLError) -> str:
    """pyyaml's problem, with its context when the problem alone reads as a fragment."""
    problem, context = exc.problem, exc.context
    if context and exc.context_mark is not None and context.endswith("first occurrence"):
        context += f" on line {exc.context_mark.line + 1}"
    if problem and context and not context.startswith("while "):
        # ("expected a single document in the stream", "but found another document")
        return f"{context}, {problem}"
    return problem or context or "invalid YAML"


_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"


class _Builder:
    """Builds plain data from a node tree, recording lines and duplicate keys."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.loader = yaml.SafeLoader("")
        self.active: set[int] = set()  # collection nodes being built (alias cycles)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.smap.value_lines[path] = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self.scalar(node)
        self.enter(node)
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def enter(self, node: yaml.Node) -> None:
        if id(node) in self.active:
            raise YamlSyntaxError(
                "invalid YAML: an alias refers to a node that contains it",
                node.start_mark.line + 1,
            )
        self.active.add(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        explicit_keys: set[Any] = set()
        pairs = [(k, v, False) for k, v in self.merged_pairs(node)]
        pairs += [(k, v, True) for k, v in node.value if k.tag != _MERGE_TAG]
        for key_node, value_node, explicit in pairs:
            key = self.build(key_node, path + ("<key>",))
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child: Path = path + (str(key),)
            if explicit:  # merged pairs come first, so explicit ones override them
                if key in explicit_keys:
                    self.smap.duplicates.append((child, key_node.start_mark.line + 1))
                explicit_keys.add(key)
            self.smap.key_lines[child] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, child)
        self.smap.value_lines.pop(path + ("<key>",), None)
        return out

    def merged_pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        """Pairs brought in by merge keys (`<<: *base`, `<<: [*a, *b]`), lowest
        precedence first: a later pair overrides an earlier one with the same key."""
        out: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in reversed(node.value):
            if key_node.tag != _MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in reversed(sources):  # the first source listed wins
                if not isinstance(source, yaml.MappingNode):
                    raise YamlSyntaxError(
                        "invalid YAML: expected a mapping or a list of mappings after '<<', "
                        f"but found {source.id}",
                        source.start_mark.line + 1,
                    )
                self.enter(source)
                try:
                    out += self.merged_pairs(source)
                    out += [(k, v) for k, v in source.value if k.tag != _MERGE_TAG]
                finally:
                    self.active.discard(id(source))
        return out

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag == _VALUE_TAG:  # a plain `=`, which pyyaml reads as a string
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception:  # a resolver tag whose constructor rejects the text (!!int abc)
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlSyntaxError(
                f"invalid YAML: cannot read {node.value!r} as {tag}", node.start_mark.line + 1
            ) from None
