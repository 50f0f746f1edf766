"""Build script: compiles the simulated kernel with mypyc when a C compiler is present.

The metadata lives in pyproject.toml; this file only adds the compiled extension
modules. The Python sources (cowlab/kernel/*.py, cowlab/geometry.py, the env's
per-step work cowlab/envcore.py and the shipped workloads,
cowlab/workloads/*.py) are the one source of truth: mypyc turns them into C
extension modules that sit next to them, and ``COWLAB_PURE=1`` makes cowlab import the
``.py`` files instead (cowlab/_build.py).

With GCC the build is profile-guided (``BuildExt._compile``): compiled with
``-fprofile-generate``, run on cowlab/_pgo.py's profiling workload, compiled again with
``-fprofile-use``; ``COWLAB_PGO=0`` skips the profile.

When there is no working C compiler, or mypyc cannot be imported or fails, the
installation goes on as pure Python and says so (here, on the build's output, and at
run time in ``cowlab --version``). ``COWLAB_BUILD=pure`` skips compiling on purpose.

The build writes ``cowlab/_compiled.json`` (git-ignored): a hash of every compiled
source, so that an edited source is never shadowed by a stale extension module (the
pure build is used instead, with a warning, until the next ``pip install -e .``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "cowlab" / "_compiled.json"
#: Modules that stay interpreted: the package file, the exception classes (mypyc
#: cannot compile classes derived from RuntimeError) and the runtime-checkable Policy
#: protocol (a compiled class is no Protocol).
INTERPRETED = {"__init__.py", "errors.py", "policy.py"}
#: Workload modules that stay interpreted: the package file and the plugin hook module.
WORKLOADS_INTERPRETED = {"__init__.py", "builtin.py"}
#: The mypyc group: one shared library, cowlab/kernel/_native__mypyc.*.so.
GROUP = "cowlab.kernel._native"


def compiled_sources() -> list[str]:
    """The sources mypyc compiles, relative to the project root, in a fixed order."""
    kernel = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "cowlab" / "kernel").glob("*.py")
        if p.name not in INTERPRETED
    )
    workloads = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "cowlab" / "workloads").glob("*.py")
        if p.name not in WORKLOADS_INTERPRETED
    )
    return [*kernel, "cowlab/geometry.py", "cowlab/envcore.py", *workloads]


def module_name(source: str) -> str:
    """``cowlab/kernel/fault.py`` -> ``cowlab.kernel.fault``."""
    return source[: -len(".py")].replace("/", ".")


def source_hashes(sources: list[str]) -> dict[str, str]:
    """sha256 of each source, by module name (what cowlab/_build.py compares)."""
    return {
        module_name(s): hashlib.sha256((ROOT / s).read_bytes()).hexdigest() for s in sources
    }


def warn(message: str) -> None:
    """A loud line on the build output (pip shows it with -v, or when the build fails)."""
    sys.stderr.write(f"\n*** cowlab: {message}\n\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """A progress line on the build output."""
    sys.stderr.write(f"cowlab: {message}\n")
    sys.stderr.flush()


def write_manifest(data: dict[str, Any], path: Path = MANIFEST) -> None:
    """Write ``data`` to ``path`` (cowlab/_compiled.json) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def c_compiler() -> Any:
    """The C compiler setuptools builds extension modules with, configured as it would."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    return cc


def compiler_problem() -> str | None:
    """Why no extension can be built here (None: a C compiler works)."""
    try:
        cc = c_compiler()
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "probe.c"
            src.write_text("int cowlab_probe(void) { return 0; }\n", encoding="utf-8")
            cc.compile([str(src)], output_dir=tmp)
    except Exception as exc:  # any failure means: no usable compiler
        detail = " ".join(str(exc).split())
        if len(detail) > 120:
            detail = detail[:117] + "..."
        return f"no working C compiler ({type(exc).__name__}: {detail})"
    return None


class BuildExt(build_ext):
    """build_ext that runs mypyc (only when extensions are really built, not when pip
    merely asks for the build requirements), falls back to pure Python when compiling is
    impossible or fails, and records what it built in cowlab/_compiled.json."""

    def run(self) -> None:
        if not self.extensions:
            return
        # Hashed before compiling: a source edited during the build reads as stale.
        hashes = source_hashes(SOURCES)
        reason = compiler_problem()
        if reason is None:
            try:
                from mypyc.build import mypycify
            except ImportError as exc:
                reason = f"mypyc is not available ({exc})"
        if reason is None:
            note(f"compiling {len(SOURCES)} kernel modules with mypyc (a few minutes)")
            try:
                # The build environment holds setuptools and mypy, not cowlab's runtime
                # dependencies: mypy still reads the modules the kernel's parent package
                # imports (pluggy, gymnasium...), so errors there are silenced; the kernel
                # modules themselves are checked strictly (pyproject's [tool.mypy]).
                built = list(mypycify(["--follow-imports=silent", *SOURCES], opt_level="3",
                                      group_name=GROUP))
            except (Exception, SystemExit) as exc:  # mypyc reports errors with SystemExit
                reason = f"mypyc failed ({type(exc).__name__}: {exc})"
        if reason is None:
            reason = self._adopt(built)
        profiled = False
        if reason is None:
            try:
                profiled = self._compile()
            except Exception as exc:
                reason = f"compiling the kernel failed ({type(exc).__name__}: {exc})"
        if reason is not None:
            warn(f"{reason}; installing the pure-Python build (slower, same results)")
            self._drop_built()  # extension modules of an earlier build would be stale
            write_manifest({"compiled": False, "reason": reason}, self._manifest_path())
            if self._manifest_path().resolve() != MANIFEST:
                write_manifest({"compiled": False, "reason": reason})
            self.extensions = []
            return
        note(f"compiled kernel built: {len(self.extensions)} extension modules"
             + (", profile-guided" if profiled else ""))
        write_manifest({"compiled": True, "group": GROUP, "modules": hashes,
                        "profile_guided": profiled}, self._manifest_path())

    def _compile(self) -> bool:
        """Compile the extension modules; returns whether the build is profile-guided.

        With GCC (unless ``COWLAB_PGO=0``) the build is profile-guided: compiled once with
        ``-fprofile-generate``, run on cowlab/_pgo.py's profiling workload, and compiled
        again with ``-fprofile-use`` (the hot paths laid out together, the code that never
        ran out of their way; the same results: no semantic option changes). Should the
        profiling run fail, the second compile goes on without a profile, with a warning.
        Every GCC build also binds the module's own functions locally
        (``-fno-semantic-interposition``: mypyc's functions are global symbols, which a
        shared library otherwise calls through its PLT and never inlines) and calls
        libpython through its GOT (``-fno-plt``).
        """
        if not is_gcc():
            super().run()
            return False
        compiler = self.compiler  # build_ext.run() replaces the option with its instance
        local = ["-fno-semantic-interposition", "-fno-plt"]
        if os.environ.get("COWLAB_PGO", "1") == "0":
            note("COWLAB_PGO=0: compiling without a profile")
            self._flags(local)
            super().run()
            return False
        with tempfile.TemporaryDirectory(prefix="cowlab-pgo-") as profile:
            note("profile-guided build, step 1 of 3: compiling with -fprofile-generate")
            self._flags([*local, f"-fprofile-generate={profile}", "-fprofile-update=single"],
                        [f"-fprofile-generate={profile}"])
            super().run()
            note("profile-guided build, step 2 of 3: the profiling run (cowlab/_pgo.py)")
            problem = self._profile()
            self.force = True  # every module again, with the profile this time
            self.compiler = compiler
            if problem is not None:
                warn(f"the profiling run failed ({problem}); compiling without a profile "
                     "(slower, same results)")
                self._flags(local)
                super().run()
                return False
            note("profile-guided build, step 3 of 3: compiling with -fprofile-use")
            self._flags([*local, f"-fprofile-use={profile}", "-fprofile-partial-training",
                         "-Wno-missing-profile"])
            super().run()
        return True

    def _flags(self, compile_args: list[str], link_args: tuple[str, ...] | list[str] = ()
               ) -> None:
        """Compile and link every extension module with mypyc's flags plus these."""
        for ext in self.extensions:
            base = getattr(ext, "_cowlab_flags", None)
            if base is None:
                base = ext._cowlab_flags = (list(ext.extra_compile_args),  # type: ignore[attr-defined]
                                            list(ext.extra_link_args))
            ext.extra_compile_args = [*base[0], *compile_args]
            ext.extra_link_args = [*base[1], *link_args]

    def _profile(self) -> str | None:
        """Run cowlab/_pgo.py on the instrumented build; returns a problem, or None."""
        root = Path(self.get_ext_fullpath(GROUP + "__mypyc")).parents[2]
        env = dict(os.environ)
        try:  # the compiled workloads import mypy_extensions: the build environment's
            import mypy_extensions

            env["PYTHONPATH"] = str(Path(mypy_extensions.__file__).parent)
        except ImportError:
            pass
        try:
            done = subprocess.run([sys.executable, str(ROOT / "cowlab" / "_pgo.py"), str(root)],
                                  env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{type(exc).__name__}: {exc}"
        sys.stderr.write(done.stderr[-2000:])
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"exit status {done.returncode}: {last}"
        return None

    def _manifest_path(self) -> Path:
        """Next to the extension modules: the source tree for an editable install, the
        build directory (and so the wheel) otherwise."""
        return Path(self.get_ext_fullpath(module_name(SOURCES[0]))).parents[1] / MANIFEST.name

    def _adopt(self, built: list[Extension]) -> str | None:
        """Give the placeholders (already finalized by setuptools) mypyc's sources and
        flags; returns a problem, or None."""
        by_name = {ext.name: ext for ext in built}
        if set(by_name) != {ext.name for ext in self.extensions}:
            return (f"mypyc made extension modules {sorted(by_name)}, expected "
                    f"{sorted(ext.name for ext in self.extensions)}")
        for ext in self.extensions:
            made = by_name[ext.name]
            for attr in ("sources", "include_dirs", "define_macros", "undef_macros",
                         "library_dirs", "libraries", "runtime_library_dirs", "extra_objects",
                         "extra_compile_args", "extra_link_args", "export_symbols",
                         "depends", "language"):
                setattr(ext, attr, getattr(made, attr))
        return None

    def _drop_built(self) -> None:
        for ext in self.extensions:
            path = Path(self.get_ext_fullpath(ext.name))
            if path.exists():
                path.unlink()


def is_gcc() -> bool:
    """Is the C compiler setuptools uses GCC (the profile-guided build's flags are
    GCC's)?"""
    command = getattr(c_compiler(), "compiler_so", None) or ["cc"]
    try:
        out = subprocess.run([command[0], "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Free Software Foundation" in out and "clang" not in out.lower()


def placeholders() -> list[Extension]:
    """One entry per extension module mypyc will make (a shim per compiled module and
    the group's shared library); :class:`BuildExt` replaces them with mypyc's."""
    if os.environ.get("COWLAB_BUILD", "").lower() == "pure":
        reason = "COWLAB_BUILD=pure was set at install time"
        warn(f"{reason}; installing the pure-Python build (slower, same results)")
        write_manifest({"compiled": False, "reason": reason})
        return []
    names = [module_name(s) for s in SOURCES] + [GROUP + "__mypyc"]
    return [Extension(name, sources=[]) for name in names]


os.chdir(ROOT)  # mypycify takes paths relative to the project root
SOURCES = compiled_sources()

setup(ext_modules=placeholders(), cmdclass={"build_ext": BuildExt})
