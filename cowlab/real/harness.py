"""The C harness: its source, ``emit``, the compile cache and running it.

The source is package data (``harness.c``). ``emit`` bakes a scenario's script into it,
giving a standalone program. For ``cowlab real run`` the generic program (which reads
its script from a file) is compiled once with the system C compiler into
``$XDG_CACHE_HOME/cowlab/real`` (default ``~/.cache/cowlab/real``), under a name keyed
by the sha256 of the source and the compiler command, so an edited harness is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from cowlab.real.script import Script

#: The marker in harness.c that ``emit`` replaces with the baked script.
_MARK = '/*@SCRIPT@*/ "";'
#: Compilers tried, in order, when ``$CC`` is not set.
COMPILERS = ("cc", "gcc", "clang")
CFLAGS = ("-O2", "-Wall", "-pthread")


class HarnessError(RuntimeError):
    """The harness cannot be built or run here (a usage-level refusal: exit status 2)."""


def source() -> str:
    """The harness's C source (the generic program that reads its script from a file)."""
    return resources.files("cowlab.real").joinpath("harness.c").read_text(encoding="utf-8")


def _c_string(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        out.append(f'    "{esc}"')
    return "\n".join(out) + ";"


def emit(script: Script) -> str:
    """A standalone C program running ``script``: compile with
    ``cc -O2 -pthread t.c -o t`` and run ``sudo ./t > result.json``."""
    src = source()
    if _MARK not in src:  # pragma: no cover - guarded by a unit test on the shipped file
        raise HarnessError("harness.c has lost its script marker")
    header = (
        f"/* Emitted by cowlab real emit for {script.name} (script sha256 {script.hash}).\n"
        f" * Build: cc -O2 -pthread THIS.c -o harness   Run (as root): ./harness [TIMEOUT_S]\n"
        f" * Then: cowlab real import RESULT.json SCENARIO */\n"
    )
    return header + src.replace(_MARK, _c_string(script.text()))


def find_compiler() -> list[str]:
    """The C compiler command: ``$CC`` if set, else the first of cc, gcc, clang on PATH."""
    env = os.environ.get("CC")
    tried = [env] if env else list(COMPILERS)
    for name in tried:
        argv = name.split()
        if argv and shutil.which(argv[0]):
            return argv
    raise HarnessError(
        f"no C compiler found (tried {', '.join(tried)} on PATH"
        f"{'' if env else '; set CC to choose one'}); the harness is compiled at first use"
    )


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cowlab/real`` or ``~/.cache/cowlab/real``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cowlab" / "real"


def build(src: str | None = None) -> Path:
    """The compiled generic harness, built into the cache if not there yet."""
    src = source() if src is None else src
    cc = find_compiler()
    key = hashlib.sha256((src + "\0" + " ".join(cc + list(CFLAGS))).encode()).hexdigest()[:16]
    out = cache_dir() / f"harness-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        c_file = Path(tmp) / "harness.c"
        c_file.write_text(src, encoding="utf-8")
        exe = Path(tmp) / "harness"
        proc = subprocess.run([*cc, *CFLAGS, str(c_file), "-o", str(exe)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"compiling the harness with {' '.join(cc)} failed:\n"
                               f"{proc.stderr.strip()}")
        os.replace(exe, out)
    return out


def check_host() -> None:
    """Refuse (HarnessError) where the harness cannot run: not Linux, or not root."""
    if not sys.platform.startswith("linux"):
        raise HarnessError(f"the real-kernel harness needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise HarnessError(
            "the real-kernel harness needs root: /proc/self/pagemap hides page frame numbers "
            "from unprivileged processes (CAP_SYS_ADMIN), and machine set-up writes sysfs")


def run_harness(script: Script, *, exe: Path | None = None, timeout_s: int | None = None,
                args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``script`` with the compiled harness; return its parsed JSON result.

    The harness runs in its own process group, which is killed (SIGKILL) after
    ``timeout_s`` seconds (default: the script's own limit plus 10 s); the harness
    also enforces the script's limit itself with alarm().
    """
    exe = build() if exe is None else exe
    limit = (script.timeout_s + 10) if timeout_s is None else timeout_s
    with tempfile.NamedTemporaryFile("w", suffix=".script", delete=False) as fh:
        fh.write(script.text())
        path = fh.name
    try:
        argv = [str(exe), *(args or (path, str(script.timeout_s)))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise HarnessError(f"the harness ran longer than {limit} s and was killed") from None
        except BaseException:
            # Ctrl-C or SIGTERM: SIGTERM first, so the harness restores the KSM knobs it
            # may have changed and kills its workers; SIGKILL whatever is left after 2 s.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            raise
        finally:
            # Workers are in the harness's process group: none may outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise HarnessError(f"the harness failed (exit status {proc.returncode}): "
                           f"{err.strip() or 'no message'}")
    try:
        result: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"the harness printed no valid JSON ({exc}); stderr: {err.strip()}")\
            from None
    return result
