"""Reading the YAML files cowlab takes (scenarios, configs, suites), with one-line errors.

Every error names the file, and for a syntax error the line, so the commands that read
these files can report it as it is and exit with status 2.
"""

from __future__ import annotations

from pathlib import Path

import yaml


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file."""


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
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlFileError(f"{path}:{line} invalid YAML: {problem}") from None
