"""The docs quote the code: listings, commands and options must match what cowlab does.

* The ``cowlab plugins`` and ``cowlab policies`` outputs pasted in
  docs/writing-a-policy.md are generated from the code: the blocks of cowlab's own
  plugins must equal what the commands print now (the tutorial's own plugin stays as it
  was pasted). ``python tests/test_docs_code.py`` rewrites them after a change.
* Every ``cowlab VERB ... --option`` quoted anywhere in docs/ or README.md is an option
  that verb has (``validate --executor`` was documented and did not exist).
* The project's docs are self-contained: no design file outside the repository is cited.
* One executor vocabulary (``inprocess``, ``process``, ``ray``) everywhere.
"""

from __future__ import annotations

import argparse
import io
import re
import shlex
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "writing-a-policy.md"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def _output(*argv: str) -> str:
    from cowlab.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(list(argv)) == 0
    return buf.getvalue().rstrip("\n")


def _pasted(text: str, command: str) -> tuple[int, int]:
    """Start and end offsets of the output block pasted after ``command``'s sh block."""
    marker = f"```sh\n{command}\n```\n\n```\n"
    start = text.index(marker) + len(marker)
    return start, text.index("\n```", start)


def _blocks(listing: str) -> list[str]:
    return [b for b in listing.split("\n\n") if b.strip()]


def _is_cowlab_block(block: str) -> bool:
    return re.match(r"^\S+  cowlab \S+$", block.splitlines()[0]) is not None


def expected_plugins(pasted: str) -> str:
    """The code's blocks for cowlab's plugins, then the pasted third-party blocks."""
    ours = _blocks(_output("plugins"))
    theirs = [b for b in _blocks(pasted) if not _is_cowlab_block(b)]
    return "\n\n".join([*(b for b in ours if _is_cowlab_block(b)), *theirs])


def expected_policies(pasted: str) -> str:
    ours = [line for line in _output("policies").splitlines() if "[cowlab " in line]
    theirs = [line for line in pasted.splitlines() if "[cowlab " not in line]
    return "\n".join(sorted([*ours, *theirs]))


def regenerate() -> None:
    """Rewrite the pasted listings of docs/writing-a-policy.md from the code."""
    text = TUTORIAL.read_text(encoding="utf-8")
    for command, make in (("cowlab plugins", expected_plugins),
                          ("cowlab policies", expected_policies)):
        start, end = _pasted(text, command)
        text = text[:start] + make(text[start:end]) + text[end:]
    TUTORIAL.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(("command", "make"), [("cowlab plugins", expected_plugins),
                                               ("cowlab policies", expected_policies)])
def test_pasted_listings_match_what_the_commands_print(command: str, make: object) -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    start, end = _pasted(text, command)
    pasted = text[start:end]
    assert pasted == make(pasted), (  # type: ignore[operator]
        f"docs/writing-a-policy.md: the pasted `{command}` output is stale; "
        "regenerate it with: python tests/test_docs_code.py")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


_COMMAND = re.compile(r"(?:^|[`\s$(])cowlab((?: +[^`\n|;&)]*)?)")


def quoted_commands() -> list[tuple[str, str]]:
    """``(file, "cowlab ...")`` for every command line quoted in the docs."""
    found = []
    for path in DOCS:
        for line in path.read_text(encoding="utf-8").splitlines():
            for m in _COMMAND.finditer(line):
                rest = m.group(1).strip()
                if rest and re.match(r"[a-z]", rest):
                    found.append((path.name, "cowlab " + rest))
    return found


def test_every_quoted_cowlab_option_exists() -> None:
    from cowlab.cli import build_parser

    parser = build_parser()
    verbs = _subparsers(parser)
    checked = 0
    problems = []
    for name, command in quoted_commands():
        try:
            words = shlex.split(command, posix=True)
        except ValueError:
            words = command.split()
        if len(words) < 2 or words[1] not in verbs:
            continue
        sub = verbs[words[1]]
        nested = _subparsers(sub)
        if nested and len(words) > 2 and words[2] in nested:
            sub = nested[words[2]]
        known = _options(sub) | _options(parser)
        for word in words[2:]:
            option = word.split("=", 1)[0]
            if option.startswith("--") and re.fullmatch(r"--[a-z][a-z-]*", option):
                checked += 1
                if option not in known:
                    problems.append(f"{name}: `{command}`: {words[1]} has no {option}")
    assert checked > 20
    assert problems == []


def test_docs_cite_no_design_file_outside_the_repository() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for name in ("KERNEL_MODEL.md", "ARCHITECTURE.md", "STYLE.md", "../shared",
                     "shared/design"):
            assert name not in text, f"{path.name} cites {name}"


def test_one_executor_vocabulary_in_docs_and_configs() -> None:
    from cowlab.config import ExecutorKind
    from cowlab.leaderboard import EXECUTOR_NAMES

    assert tuple(k.name for k in ExecutorKind) == EXECUTOR_NAMES == ("inprocess", "process",
                                                                     "ray")
    for path in [*DOCS, *(ROOT / "configs").rglob("*.yaml")]:
        text = path.read_text(encoding="utf-8")
        assert "local|ray" not in text and "`local` or `ray`" not in text, path
        assert not re.search(r"^\s*(kind|executor): local\b", text, re.M), path


def test_the_tutorial_shows_the_contract_check_and_the_leaderboard_extra() -> None:
    import inspect

    from cowlab.testing import check_policy_contract

    text = TUTORIAL.read_text(encoding="utf-8")
    assert "check_policy_contract(RefcountOrPae)" in text
    assert list(inspect.signature(check_policy_contract).parameters)[:1] == ["make_policy"]
    assert '-e "$COWLAB[leaderboard]"' in text
    assert "not available yet" not in text


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(ROOT))
    regenerate()
    print(f"rewrote the pasted listings in {TUTORIAL.relative_to(ROOT)}")


def test_leaderboard_docs_describe_the_committed_suite() -> None:
    from cowlab.leaderboard import load_suite

    suite = load_suite(ROOT / "configs" / "suites" / "cowlab-bench-v2.yaml")
    text = (ROOT / "docs" / "leaderboard.md").read_text(encoding="utf-8")
    section = text[text.index("## The suite `cowlab-bench-v2`"):]
    section = section[: section.index("\n## ", 1)]
    words = {4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
    assert f"{words[len(suite.workloads)]} workloads" in section
    for w in suite.workloads:
        assert w.name in section, w.name
    for k in suite.kernels:
        assert k in section, k
