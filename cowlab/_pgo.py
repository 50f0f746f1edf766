"""The profiling run of the profile-guided build (setup.py; not imported by cowlab).

setup.py first compiles the kernel with GCC's ``-fprofile-generate``, runs this script
against that instrumented build, then compiles it again with ``-fprofile-use``: the C
compiler lays out the hot paths of the kernel, the workloads and the env's per-step work
(cowlab/envcore.py) contiguously and moves what never ran out of their way. The
machine code computes exactly what it computed before (no floating-point or other
semantic option is involved): only its layout and inlining change, which makes an env
step cheaper, most of all inside training, where the learner's work between two steps
evicts the simulator's code from the CPU caches.

It runs in the build environment, where cowlab's runtime dependencies (gymnasium,
numpy, pluggy...) are not installed: it imports only the compiled modules, whose
imports are the standard library's and ``mypy_extensions``, under a bare ``cowlab``
package (cowlab/__init__.py, which imports gymnasium, is not run). What it runs: every
shipped workload at its training-sized parameters on the kernel eras the leaderboard
uses, decided through the env's own compiled machinery (cowlab/envcore.py: the
:class:`Bridge` policy, each decision made an env step by :meth:`StepCore.step`, with
its reward, info and next observation) by a stand-in agent that reuses the pages the
kernel can prove exclusive (copying a few anyway); only the greenlet switch between
the run and the env is left out. Usage (setup.py does this)::

    python cowlab/_pgo.py <directory holding the built cowlab package>
"""

from __future__ import annotations

import random
import sys
import time
import types
from pathlib import Path
from typing import Any

#: (workload module, class, parameters): the training mix of configs/exclusive.yaml and
#: the other shipped workloads at small sizes.
WORKLOADS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("fork_snapshot", "ForkSnapshot", {"pages": 512}),
    ("pinned_io", "PinnedIo", {}),
    ("softdirty", "SoftdirtyTracking", {"pages": 512}),
    ("forceswap", "Forceswap", {"swap": "pmem", "npages": 4, "nthreads": 1}),
    ("vmsplice", "VmsplicePipe", {"pages": 512}),
    ("memcached", "MemcachedPressure", {}),
    ("ksm_vms", "KsmVms", {}),
)
#: Kernel eras: the leaderboard's and the headline study's.
ERAS = ("v5.7", "v5.8", "v5.18", "v5.19", "v6.12")


def main(root: str) -> None:
    package = types.ModuleType("cowlab")
    package.__path__ = [str(Path(root) / "cowlab")]
    sys.modules["cowlab"] = package
    sys.path.insert(0, root)

    from cowlab.envcore import COPY, REUSE, Bridge, StepCore, exclusive_proven
    from cowlab.kernel.decision import Decision
    from cowlab.kernel.kernel import Kernel
    from cowlab.kernel.presets import get_preset
    from cowlab.workloads.base import Budget, Run, machine_for, resolve_workload

    class Glet:
        """Stands in for the greenlet an env runs the run in (greenlet is not installed
        here, and the run calls its policy directly): the step's switch keeps the answer
        the step sends and hands back the fault being decided."""

        def __init__(self) -> None:
            self.view: Any = None
            self.answer: Any = None

        def switch(self, answer: object = None) -> Any:
            self.answer = answer
            return self.view

    class Agent:
        """Stands in for the env's side of the switch (the bridge's parent): reuses what
        the kernel can prove exclusive (one in eight copied anyway), and makes each
        decision into an env step (StepCore.step: the reward, the info, the next
        observation, as a list)."""

        def __init__(self, core: StepCore, glet: Glet, seed: int) -> None:
            self.core = core
            self.glet = glet
            self.rng = random.Random(seed)

        def switch(self, view: Any) -> Decision:
            reuse = exclusive_proven(view) and self.rng.random() >= 0.125
            glet = self.glet
            self.core.fault = glet.view = view
            self.core.step(REUSE if reuse else COPY)
            answer: Decision = glet.answer  # what the step sent into the run
            return answer

    start = time.perf_counter()
    decisions = 0
    for module, cls, params in WORKLOADS:
        made = getattr(__import__(f"cowlab.workloads.{module}", fromlist=[cls]), cls)(**params)
        for era in ERAS:
            for seed in range(2):
                workload = resolve_workload(made, seed)
                glet = Glet()
                core = StepCore(1.0, 0.1, 0.1, 100.0, False, 4, False, False, list, None)
                bridge = Bridge()
                bridge.parent = Agent(core, glet, seed)
                kernel = Kernel(get_preset(era), bridge, machine=machine_for(workload, None),
                                seed=seed, keep_records=True, record_hits=False)
                run = Run(workload, kernel, seed, Budget(max_decisions=600))
                core.glet, core.run, core.workload, core.run_seed = glet, run, module, seed
                run.execute()
                decisions += kernel.nr_decisions
                run.close()
    print(f"cowlab: profiling run: {decisions} decisions in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
