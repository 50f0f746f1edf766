"""Reading the YAML files cowlab takes (scenarios, configs, suites), with one-line errors.

Every error names the file, and for a syntax error the line, so the commands that read
these files can report it as it is and exit with status 2.

Two YAML 1.1 quirks of PyYAML are fixed by the loader used here (:class:`CowlabLoader`):

* a key given twice in one mapping is an error naming both lines (PyYAML keeps the last
  value silently, so a typo'd second ``params:`` would hide the first);
* ``1e3``, ``-2.5E-4`` and other exponent numbers without a dot are floats, as in YAML
  1.2 (PyYAML reads them as strings).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

__all__ = ["CowlabLoader", "YamlFileError", "load_yaml_text", "read_yaml"]


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file."""


class CowlabLoader(yaml.SafeLoader):
    """PyYAML's safe loader, rejecting duplicate keys and reading ``1e3`` as a float."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[object, object]:
        """A mapping whose keys are all distinct (else a ConstructorError naming both)."""
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)
            seen: dict[object, Node] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise ConstructorError(
                        f"while constructing a mapping (line {first.start_mark.line + 1})",
                        node.start_mark,
                        f"duplicate key {key!r} (first on line {first.start_mark.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


# YAML 1.2's float forms that YAML 1.1 lacks: an exponent without a dot (1e3, -2E-4).
CowlabLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml_text(text: str) -> object:
    """Parse YAML text with :class:`CowlabLoader` (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=CowlabLoader)


def read_yaml(path: str | Path, *, what: str) -> object:
    """Read and parse the YAML file at ``path``; ``what`` names it in errors (``config``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            f"{path}: not UTF-8 text (byte {exc.start}): is this a {what} file?"
        ) from None
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlFileError(f"{path}:{line} invalid YAML: {problem}") from None
