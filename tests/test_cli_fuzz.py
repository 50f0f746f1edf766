"""Fuzzing the CLI's verbs around the simulator (issue 16): ``eval``, ``leaderboard``,
``train`` configs (``--check``: schema level, no training) and ``validate`` on mangled
records. Every case must end with exit status 0, 1 or 2 and no traceback, in the
spirit of the scenario fuzzing: a mistake is a located one-line error.

The default suite runs a few dozen cases per verb (seconds); the ``slow`` variant runs
many more. Cases are drawn from a seeded generator, so a failure names a reproducible
case.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main

ROOT = Path(__file__).resolve().parents[1]

POLICIES = ["exclusive", "baseline", "oracle", "always-copy", "exclusiv", "nope", "",
            "sb3:", "sb3:/nonexistent/model.zip", "random", "sb3", ":", "a:b"]
WORKLOADS = ["forceswap-v1", "pinned-io-v1", "forceswap", "", "x" * 40]
KERNELS = ["v5.19", "v5.18", "v6.1", "v9.9", "", "5.19"]
NUMBERS = ["-5", "0", "1", "3", "1e3", "1.5", "abc", "", "99999999999999999999", "-0", "nan"]
SEEDS = ["0", "0-2", "2-0", "a", "", "0,,1", "-1", "1-", "0-1,5", "1e2"]
VALUES = ["0", "-1", "1", "2.5", "1e3", "true", "null", "[]", "{}", "[1, 2]", "{a: 1}",
          "abc", "'quoted'", "${name}", "${nope}", "???", "[", "{", "", "-", "~"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:
        pytest.fail(f"cowlab {' '.join(argv)!r} raised {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2 and "usage:" not in err:
        assert err.strip().startswith("cowlab: error: "), (argv, err)
    return code, err


def _eval_case(rng: random.Random, tmp: Path) -> list[str]:
    argv = ["eval", "--executor", "inprocess", "--quiet", "--out", str(tmp / "eval.jsonl")]
    if rng.random() < 0.4:  # a valid command with at most one mutation
        argv += ["--policy", "exclusive", "--workload", "forceswap-v1", "--param",
                 "swap=pmem", "--decisions", "10"]
        if rng.random() < 0.5:
            argv += rng.choice([["--seeds", rng.choice(SEEDS)],
                                ["--kernel", rng.choice(KERNELS)],
                                ["--policy", rng.choice(POLICIES)],
                                ["--param", rng.choice(["npages=2", "npages=-1", "nops=3"])]])
        return argv
    for _ in range(rng.randint(0, 2)):
        argv += ["--policy", rng.choice(POLICIES)]
    for _ in range(rng.randint(0, 2)):
        argv += ["--workload", rng.choice(WORKLOADS)]
    if rng.random() < 0.5:
        argv += ["--kernel", rng.choice(KERNELS)]
    if rng.random() < 0.7:
        argv += ["--decisions", rng.choice([*NUMBERS[:5], "-5", "x"])]
    else:
        argv += ["--decisions", "10"]
    if rng.random() < 0.4:
        argv += ["--seeds", rng.choice(SEEDS)]
    if rng.random() < 0.4:
        argv += ["--param", rng.choice(["swap=pmem", "npages=2", "npages=-1", "nops=3",
                                        "swap=floppy", "=", "noeq", "npages=1e3",
                                        "npages=[", "npages"])]
    if rng.random() < 0.2:
        argv += ["--workers", rng.choice(["0", "-3", "1"])]
    if rng.random() < 0.15:
        argv += [rng.choice(["configs/exclusive.yaml", "nofile.yaml", "README.md"]),
                 rng.choice(["eval.seeds=1", "eval.max_decisions=5", "eval.seeds=-1",
                             "x=1", "eval.baselines=[]"])]
    return argv


def _leaderboard_case(rng: random.Random, tmp: Path) -> list[str]:
    argv = ["leaderboard", rng.choice(["configs/leaderboard/smoke.yaml"] * 6 + [
        "nofile.yaml", "configs/suites/smoke.yaml", "configs/exclusive.yaml"]),
        f"output={tmp / 'lb'}", f"records={tmp / 'lb.jsonl'}", "--quiet"]
    overrides: dict[str, Callable[[], str]] = {
        "entries": lambda: rng.choice(["[exclusive]", "[exclusiv]", "[]", "exclusive",
                                       "[exclusive, oracle]", "[{policy: exclusive, label: E}]",
                                       "[{policy: exclusive, label: 3}]", "[{label: x}]",
                                       "[{policy: exclusive, extra: 1}]", "[[1]]", "[null]"]),
        "reference": lambda: rng.choice(["exclusive", "nope", "oracle", "", "[1]"]),
        "bootstrap_reps": lambda: rng.choice(["-1", "0", "5", "abc", "1.5"]),
        "confidence": lambda: rng.choice(["1.5", "0", "0.9", "-0.1", "x", "1"]),
        "workers": lambda: rng.choice(["0", "1", "-2", "x", "null"]),
        "executor": lambda: rng.choice(["inprocess", "local", "threads", "", "ray2"]),
        "seed": lambda: rng.choice(["1", "-1", "x"]),
        "suite": lambda: rng.choice(["nofile.yaml", "configs/suites/smoke.yaml",
                                     "configs/exclusive.yaml", "README.md"]),
        "labels": lambda: rng.choice(["{exclusive: E}", "{nope: N}", "[]"]),
        "policy_params": lambda: rng.choice(["{exclusive: {x: 1}}", "{nope: {}}", "[]"]),
        "bogus": lambda: "1",
    }
    chosen = rng.sample(sorted(overrides), rng.randint(0, 3))
    argv += [f"{key}={overrides[key]()}" for key in chosen]
    if "executor" not in chosen:
        argv.append("executor=inprocess")
    if "bootstrap_reps" not in chosen:
        argv.append("bootstrap_reps=5")
    if "entries" not in chosen:
        argv.append("entries=[exclusive]")
    return argv


def _train_keys() -> list[str]:
    from cowlab.config import schema_keys

    keys = [k.replace("[]", ".0") for k in schema_keys()]
    return [*keys, "agent.ppo.n_steps", "agent.ppo.learning_rate", "agent.dqn.buffer_size",
            "agent.hyperparameters.learning_rate", "agent.hyperparameters.n_step",
            "workload.mix.0.params.pages", "workload.mix.7.weight", "workload.mix.x",
            "agent..algo", "agent", "nope", "agent.algo.x"]


def _train_case(rng: random.Random, tmp: Path, keys: list[str]) -> list[str]:
    base = rng.choice(["configs/exclusive.yaml"] * 4 + ["configs/baseline.yaml",
                                                        str(tmp / "mangled.yaml")])
    if base.endswith("mangled.yaml"):
        text = (ROOT / "configs" / "exclusive.yaml").read_text()
        lines = text.splitlines()
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            action = rng.choice(["drop", "dup", "indent", "garble", "value"])
            if action == "drop":
                del lines[i]
            elif action == "dup":
                lines.insert(i, lines[i])
            elif action == "indent":
                lines[i] = " " + lines[i]
            elif action == "garble":
                lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)] + rng.choice(
                    [":", "{", "[", "- ", "\t", "'"])
            else:
                key = lines[i].partition(":")[0]
                lines[i] = f"{key}: {rng.choice(VALUES)}"
        Path(base).write_text("\n".join(lines) + "\n")
    argv = ["train", base, "--check", f"output.dir={tmp / 'run'}"]
    for _ in range(rng.randint(0, 3)):
        argv.append(f"{rng.choice(keys)}={rng.choice(VALUES)}")
    if rng.random() < 0.1:
        argv.append(rng.choice(["noequals", "=3", "a=b=c"]))
    return argv


def _records(tmp: Path) -> list[dict[str, Any]]:
    from cowlab.evaluate import run_sweep
    from cowlab.executors import InProcessExecutor
    from cowlab.records import RunSpec

    specs = [RunSpec(policy=p, kernel="v5.19", workload="forceswap-v1", seed=s,
                     max_decisions=10, workload_params={"swap": "pmem"})
             for p in ("exclusive", "baseline") for s in (0, 1)]
    return run_sweep(specs, tmp / "good.jsonl", executor=InProcessExecutor(),
                     progress=False).records


def _mangle(rng: random.Random, value: object, depth: int = 0) -> object:
    if isinstance(value, dict) and value and depth < 4:
        out = dict(value)
        key = rng.choice(sorted(out))
        action = rng.choice(["drop", "retype", "recurse", "recurse", "add"])
        if action == "drop":
            del out[key]
        elif action == "retype":
            out[key] = rng.choice([None, 1, -1, 1.5, "x", [], {}, True, [1, 2], {"a": 1}])
        elif action == "add":
            out[rng.choice(["extra", "seed", "x" * 3])] = rng.choice([1, "a", None])
        else:
            out[key] = _mangle(rng, out[key], depth + 1)
        return out
    if isinstance(value, list) and value:
        return rng.choice([[], value[:-1], [*value, value[0]], [None], value])
    return rng.choice([None, 0, -7, 2**70, 1e308, "", "v9.9", [], {}, True, value])


def _validate_case(rng: random.Random, tmp: Path, good: list[dict[str, Any]], i: int
                   ) -> list[str]:
    path = tmp / f"mangled{i}.jsonl"
    lines = []
    for rec in good[: rng.randint(1, len(good))]:
        rec = {k: v for k, v in rec.items() if k != "wall_s"}
        mangled = _mangle(rng, rec) if rng.random() < 0.8 else rec
        lines.append(json.dumps(mangled, default=str))
    if rng.random() < 0.2:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(
            ["not json", "[1, 2]", "null", "{", '"a string"', "", "{}"]))
    if rng.random() < 0.1:
        lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a torn last line
    data = "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")
    if rng.random() < 0.05:
        path.write_bytes(b"\xff\xfe" + data.encode())
    else:
        path.write_text(data)
    argv = ["validate", "--quiet", str(path)]
    if rng.random() < 0.1:
        argv.append(str(tmp / "missing.jsonl"))
    return argv


def _fuzz(n: int, seed: int, tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    rng = random.Random(seed)
    keys = _train_keys()
    good = _records(tmp)
    capsys.readouterr()
    cases: list[Callable[[int], list[str]]] = [
        lambda i: _eval_case(rng, tmp),
        lambda i: _leaderboard_case(rng, tmp),
        lambda i: _train_case(rng, tmp, keys),
        lambda i: _validate_case(rng, tmp, good, i),
    ]
    codes: dict[str, int] = {}
    for i in range(n):
        for make in cases:
            argv = make(i)
            code, _ = _run(argv, capsys)
            codes[f"{argv[0]} {code}"] = codes.get(f"{argv[0]} {code}", 0) + 1
    return codes


def test_cli_verbs_never_show_a_traceback(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    codes = _fuzz(25, 16, tmp_path, capsys)
    # the generator reaches both sides: accepted inputs and located errors, per verb
    for verb in ("eval", "leaderboard", "train", "validate"):
        assert codes.get(f"{verb} 2", 0) > 0 or codes.get(f"{verb} 1", 0) > 0, codes
    assert codes.get("train 0", 0) > 0 and codes.get("eval 0", 0) > 0, codes


@pytest.mark.slow
def test_cli_verbs_never_show_a_traceback_many_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fuzz(250, 1616, tmp_path, capsys)
