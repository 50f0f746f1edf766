"""``cowlab selftest``: TAP and JSON output, exit statuses, the matrix, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cowlab.cli import main
from cowlab.selftest.command import DEFAULT_KERNEL


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["selftest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cowlab: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_default_run_is_v5_19_with_its_own_rule_and_kselftest_tap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "--filter", "with base page")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert DEFAULT_KERNEL == "v5.19"
    assert lines[0] == "TAP version 13"
    assert lines[1] == "# cowlab selftest: kernel v5.19, policy exclusive"
    assert "1..14" in lines
    assert "# [INFO] detected PMD size: 2048 KiB" in lines
    assert "# [RUN] Basic COW after fork() ... with base page" in lines
    assert "ok 1 Basic COW after fork() ... with base page" in lines
    assert lines[-1] == "# Totals: pass:14 fail:0 xfail:0 xpass:0 skip:0 error:0"


def test_a_failure_prints_cow_c_s_message_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--kernel", "v5.7", "--filter", "vmsplice() + unmap in child ...")
    assert code == 1
    lines = out.splitlines()
    i = lines.index("not ok 1 vmsplice() + unmap in child ... with base page")
    assert lines[i - 1] == "# Leak from parent into child"
    assert lines[-1].startswith("# Totals: pass:")
    assert "fail:0" not in lines[-1]


def test_expected_failures_and_skips_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--filter", "vmsplice() + unmap in child ... with hugetlb")
    assert code == 0
    assert ("ok 1 vmsplice() + unmap in child ... with hugetlb (2048 kB) # XFAIL Leak from "
            "parent into child") in out
    assert ("ok 2 vmsplice() + unmap in child ... with hugetlb (1048576 kB) # SKIP need more "
            "free huge pages") in out
    assert out.splitlines()[-1] == "# Totals: pass:0 fail:0 xfail:1 xpass:0 skip:1 error:0"


def test_a_known_divergence_is_noted_under_its_test(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--kernel", "v6.15", "--filter", "collapsing before fork")
    assert code == 0
    assert "# [NOTE] known simulator divergence 'no-vma-merge': upstream Linux gives PASS " \
           "here (docs/selftest.md)" in out


def test_policy_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "--kernel", "v5.18", "--policy", "always-reuse", "--filter",
                         "Basic COW after fork() ... with base", "--format", "json")
    assert (code, err) == (1, "")
    doc = json.loads(out)
    assert (doc["kernel"], doc["policy"]) == ("v5.18", "always-reuse")
    assert doc["totals"]["fail"] == 1 and doc["disagreements"] == 0
    (result,) = doc["results"]
    assert result["result"] == "fail" and result["violations"] == {"leak": 1}
    assert result["agrees"] is True and result["kind"] == "leak"
    assert result["variant"] == "base page" and result["size_kb"] is None


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "v9.9"], "unknown kernel preset"),
    (["--policy", "nosuch"], "unknown policy"),
    (["--filter", "no such test"], "no test matches"),
    (["--policy", "legacy", "--policy", "oracle"], "several only with --matrix"),
    (["--out", "somewhere"], "--out needs --matrix"),
    (["--format", "md"], "not available for a single run"),
    (["--matrix", "--format", "tap"], "not available for --matrix"),
    (["--matrix", "--kernel", "v5.9"], "give --policy"),
    (["--jobs", "0"], "--jobs"),
])
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_matrix_of_policies_writes_markdown_and_csv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    code, out, err = cli(capsys, "--matrix", "--kernel", "v5.18", "--policy", "patched-lru",
                         "--policy", "always-copy", "--filter", "with base page",
                         "--out", str(tmp_path / "m"), "--jobs", "1")
    assert (code, err) == (0, "")
    md = (tmp_path / "m" / "matrix.md").read_text(encoding="utf-8")
    assert out == md
    assert "| case | variant | patched-lru | always-copy |" in md
    assert ("| R/O-mapping a page registered as iouring fixed buffer | base page | **0/1 F:1** "
            "| **0/1 F:1** |") in md
    assert "| Basic COW after fork() | base page | 1/1 | 1/1 |" in md
    rows = list(csv.DictReader((tmp_path / "m" / "matrix.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * 14
    assert {r["policy"] for r in rows} == {"patched-lru", "always-copy"}
    assert all(r["agrees"] in ("true", "false", "") for r in rows)


def test_matrix_of_presets_covers_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--matrix", "--filter", "vmsplice() + unmap in child ... with "
                       "base page", "--format", "csv", "--jobs", "1")
    assert code == 0
    rows = list(csv.DictReader(out.splitlines()))
    assert [(r["kernel"], r["result"]) for r in rows] == [
        ("v5.7", "fail"), ("v5.8", "pass"), ("v5.9", "pass"), ("v5.11", "pass"),
        ("v5.12", "pass"), ("v5.18", "pass"), ("v5.19", "pass"), ("v6.2", "pass"),
        ("v6.9", "pass"), ("v6.11", "pass"), ("v6.12", "pass"), ("v6.15", "pass"),
    ]


def test_help_explains_the_default_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["selftest", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default v5.19: v5.19 is the first release whose own rule passes every anonymous" \
           in out


def test_docs_explain_every_option_variant_and_known_divergence() -> None:
    from cowlab.cli import build_parser
    from cowlab.selftest.divergences import KNOWN_DIVERGENCES
    from cowlab.selftest.variants import KINDS

    text = (Path(__file__).resolve().parents[1] / "docs" / "selftest.md").read_text(
        encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    options = [o for a in sub.choices["selftest"]._actions  # type: ignore[union-attr]
               for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert [o for o in options if f"`{o}" not in text] == []
    assert [f for f in KINDS.values() if f"| {f} " not in text] == []
    assert [d.id for d in KNOWN_DIVERGENCES if f"**`{d.id}`**" not in text] == []
