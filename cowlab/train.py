"""``cowlab train CONFIG [key=value ...]``: learn a reuse policy, then compare it with the kernel's.

The reference trainer, top to bottom:

1. Resolve the config (:mod:`cowlab.config`), save it as ``<output.dir>/config.yaml``.
2. Seed every source of randomness (Python, NumPy, torch; the envs), set torch threads.
3. Build ``agent.n_envs`` copies of ``cowlab/CowFault-v0`` (in-process) and the model
   (:mod:`cowlab_sb3.algos`), or load the last checkpoint with ``--resume``.
4. Learn. A progress bar shows steps per second and the running violation count; every
   rollout appends a line to ``log.jsonl`` (and TensorBoard, when installed); every
   ``eval.every_steps`` the agent is validated on the validation seeds and the best
   model with zero violations is kept (``best.zip``); every ``output.checkpoint_every``
   steps a checkpoint is written atomically. Ctrl-C writes a checkpoint and stops;
   ``--resume`` continues from it with no step lost or repeated.
5. Pick the model (best safe one on validation, else the last, flagged), save it as
   ``model.zip`` with its sidecar ``model.zip.json`` (sha256, settings, versions).
6. Evaluate it and the configured baselines on the evaluation seeds (disjoint from the
   training and validation seeds), print the table and save it (``eval.json``,
   ``eval.txt``) with the versions.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import gymnasium as gym

from cowlab import __version__
from cowlab.config import (
    TrainConfig,
    build_geometry,
    build_kernel_config,
    build_machine,
    env_kwargs,
    eval_seeds,
    save_config,
    to_yaml,
    validation_seeds,
    workload_entries,
)
from cowlab.env import ENV_ID, CowFaultEnv
from cowlab.evaluate import Evaluation, evaluate_policy
from cowlab.plugins import PluginError, get_registry

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["FINAL_FILES", "MANIFEST", "TrainError", "TrainResult", "check_device", "check_run",
           "check_training_config", "format_table", "learning_changes", "prepare_run_dir",
           "train", "versions", "write_manifest"]

CHECKPOINT = Path("checkpoints") / "last.zip"
REPLAY_BUFFER = Path("checkpoints") / "replay_buffer.pkl"


class TrainError(Exception):
    """A user-facing training error (missing extra, nothing to resume, untrusted model)."""


@dataclass
class TrainResult:
    """What a training run produced."""

    out_dir: Path
    model_path: Path | None
    num_timesteps: int
    interrupted: bool
    wall_s: float
    train_s: float
    steps_per_s: float
    #: Share of the learning wall time spent inside env.step/reset.
    env_share: float
    table: str = ""
    evaluations: list[Evaluation] = field(default_factory=list)
    #: Steps trained by this call (``num_timesteps`` counts every session).
    steps_this_process: int = 0
    #: Violations during training, over every session.
    training_violations: int = 0


class _Timed(gym.Wrapper[Any, Any, Any, Any]):
    """Accumulates the wall time spent in the environment (for the env/learner split).

    Each wrapper keeps its own total in an instance attribute: a class attribute updated
    at every step would invalidate the class's attribute cache at every step, and every
    ``self.env`` lookup inside the timed call would walk the wrapper classes again.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def step(self, action: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.seconds += time.perf_counter() - t

    def reset(self, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.seconds += time.perf_counter() - t


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects that exist before learning out of Python's cyclic garbage
    collector while it runs (``gc.freeze()``, undone at the end).

    torch, stable-baselines3 and the model make a large heap that lives for the whole
    run. Every episode of the simulated kernel allocates thousands of objects that live
    until the episode ends, and each such batch sets off a full collection, which
    scanned that whole heap again each time: most of the environments' time in
    ``cowlab train`` went to it. The objects are collected normally again afterwards;
    what is learned does not change (the collector only frees unreachable objects).

    The youngest generation is also collected less often while learning runs (every
    :data:`_YOUNG_COLLECTION_EVERY` allocations instead of Python's 700): a reset builds
    a whole simulated kernel (thousands of objects that live for the episode), which set
    off a run of young collections, each scanning that episode's objects again. The
    kernels' reference cycles are broken when an episode ends (``Run.close``), so little
    is left for the collector either way.
    """
    gc.collect()  # garbage made so far is freed, not frozen
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


#: Net allocations between two collections of the youngest generation while learning.
_YOUNG_COLLECTION_EVERY = 100_000


def versions() -> dict[str, str]:
    """Versions of Python, cowlab, the learning stack and every loaded plugin's dist."""
    out = {"python": platform.python_version(), "platform": platform.platform(),
           "cowlab": __version__}
    for dist in ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy",
                 "omegaconf", "greenlet"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    for info in get_registry().plugins:
        if info.dist and info.version:
            out.setdefault(info.dist, info.version)
    return out


def _need_sb3() -> None:
    if importlib.util.find_spec("stable_baselines3") is None or importlib.util.find_spec(
        "torch"
    ) is None:
        raise TrainError(
            "cowlab train needs stable-baselines3 and torch: "
            "pip install -c constraints.txt -e '.[sb3]'"
        )


@contextlib.contextmanager
def _sigint_requests(set_flag: Callable[[], None]) -> Iterator[None]:
    """First Ctrl-C: ask the trainer to checkpoint and stop; the second one interrupts."""
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, previous)
        print("\ncowlab: Ctrl-C: saving a checkpoint at the next step "
              "(press again to abort without saving)", file=sys.stderr)
        set_flag()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no signal handling
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _truncate_log(path: Path, steps: int) -> None:
    """Keep the log lines of steps up to the checkpoint (later ones are redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("timesteps", 0) <= steps:
                kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def format_table(evaluations: list[Evaluation], agent: str | None = None) -> str:
    """The final comparison table (Markdown)."""
    head = ("| policy | reuse rate | leak | pin_incoherent | unnecessary copies "
            "| mean latency (us) | p99 latency (us) | extra pages |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for ev in evaluations:
        m = ev.metrics
        rate = m["reuse_rate"]
        label = ev.policy
        if label == "oracle":
            label = "oracle (ground truth)"
        elif agent is not None and label == agent:
            label = f"**{label}**"
        lines.append(
            f"| {label} | {'n/a' if rate is None else f'{rate:.4f}'} "
            f"| {m['violations']['leak']} | {m['violations']['pin_incoherent']} "
            f"| {m['unnecessary_copies']} | {m['mean_latency_ns'] / 1000:.3f} "
            f"| {m['p99_latency_ns'] / 1000:.3f} | {m['extra_pages']} |"
        )
    return "\n".join(lines)


#: Files a finished run writes at its very end; ``manifest.json`` (written last) names
#: each with its sha256, so a run killed before it finished has no manifest.
FINAL_FILES = ("model.zip", "model.zip.json", "eval.json", "eval.txt", "versions.json")
MANIFEST = "manifest.json"

#: Config keys that do not change what is learned: a resume may change them freely.
RESUMABLE_KEYS = ("name", "agent.total_timesteps", "agent.device", "agent.torch_threads",
                  "eval.", "executor.", "output.")


def _flat(data: object, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out: dict[str, object] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def learning_changes(saved: object, cfg: TrainConfig) -> list[str]:
    """The keys whose values differ between a saved config and ``cfg`` and that change
    what is learned (everything but :data:`RESUMABLE_KEYS`): kernel, workload, env,
    agent.algo, net_arch, hyperparameters, seed, ..."""
    from cowlab.config import _plain

    old, new = _flat(saved), _flat(_plain(cfg))
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)
            and not any(k == r or (r.endswith(".") and k.startswith(r))
                        for r in RESUMABLE_KEYS)]


def check_device(device: str, where: str = "<config>") -> None:
    """Refuse a CUDA device on a machine without CUDA (torch would fail late or, with
    some versions, silently use the CPU)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise TrainError(f"{where}: agent.device: {device!r} requested but CUDA is not available "
                         f"here (torch {torch.__version__}); use agent.device=cpu")


def write_manifest(out: Path, names: tuple[str, ...] = FINAL_FILES) -> Path:
    """Write ``manifest.json`` (atomically, last) naming each final file with its sha256."""
    from cowlab_sb3.policy import atomic_write, file_sha256

    files = {n: file_sha256(out / n) for n in names if (out / n).exists()}
    path = out / MANIFEST
    atomic_write(path, (json.dumps({"complete": True, "files": files}, indent=2,
                                   sort_keys=True) + "\n").encode())
    return path


def check_run(out: str | Path) -> dict[str, str]:
    """Check that a run directory is complete and unmixed: its manifest exists and every
    file it names has that sha256. Returns the manifest's files.

    Raises:
        TrainError: No manifest (the run did not finish), or a file that differs.
    """
    from cowlab_sb3.policy import file_sha256

    d = Path(out)
    path = d / MANIFEST
    if not path.is_file():
        raise TrainError(f"{d}: no {MANIFEST}: the run did not finish (its model and "
                         "evaluation are not a matching pair); rerun or --resume it")
    try:
        files = dict(json.loads(path.read_text(encoding="utf-8"))["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"{path}: not a cowlab run manifest ({exc})") from None
    for name, digest in files.items():
        f = d / name
        if not f.is_file() or file_sha256(f) != digest:
            raise TrainError(f"{f}: does not match {path} (the directory mixes files "
                             "of two runs)")
    return files


def prepare_run_dir(cfg: TrainConfig, *, resume: bool, overwrite: bool, force: bool) -> Path:
    """Apply the run-directory rules (docs/training.md, "Run directories").

    * A new run needs a missing or empty ``output.dir``; ``--overwrite`` deletes an
      existing run directory first (only one that holds a cowlab ``config.yaml``).
    * ``--resume`` needs a checkpoint, and a config that changes nothing that affects
      learning (:func:`learning_changes`) unless ``--force``.
    * Either way the previous final files and manifest are removed before anything is
      trained, so a run killed later never leaves a new model beside an old evaluation.
    """
    import yaml

    out = Path(cfg.output.dir)
    ckpt = out / CHECKPOINT
    if resume and overwrite:
        raise TrainError("--resume and --overwrite exclude each other")
    if resume:
        if not ckpt.exists():
            raise TrainError(f"{ckpt}: no checkpoint to resume from (train without --resume)")
        saved = out / "config.yaml"
        if saved.exists():
            try:
                old = yaml.safe_load(saved.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                old = None
            changed = learning_changes(old, cfg)
            if changed and not force:
                shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
                raise TrainError(
                    f"{out}: the config differs from the run's {saved.name} in what is "
                    f"learned ({shown}); resuming would mix two trainings. Start a new "
                    "run (another output.dir, or --overwrite), or pass --force")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TrainError(
                f"{out}: the run directory exists and is not empty; pass --resume to "
                "continue that run, --overwrite to replace it, or set output.dir")
        if not (out / "config.yaml").is_file():
            raise TrainError(f"{out}: --overwrite refuses to delete a directory that is "
                             "not a cowlab run (no config.yaml in it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, *FINAL_FILES):
        (out / name).unlink(missing_ok=True)
    return out


def check_training_config(cfg: TrainConfig, source: str = "<config>") -> dict[str, Any]:
    """Everything ``cowlab train`` checks before it trains (``cowlab train --check``): the
    algorithm and every hyperparameter section, the device. Returns the chosen
    algorithm's constructor arguments."""
    _need_sb3()
    from cowlab_sb3.algos import AlgoError, check_hyperparameters

    algo = cfg.agent.algo.name
    try:
        for name in ("ppo", "dqn", "maskable_ppo"):
            section = dict(getattr(cfg.agent, name))
            if section and (name == algo or name != "maskable_ppo" or
                            importlib.util.find_spec("sb3_contrib") is not None):
                check_hyperparameters(name, section, where=source, prefix=f"agent.{name}")
        check_hyperparameters(algo, cfg.agent.hyperparameters, where=source)
        merged = check_hyperparameters(algo, cfg.agent.algo_hyperparameters(), where=source,
                                       prefix=f"agent.{algo}")
    except AlgoError as exc:
        raise TrainError(str(exc)) from None
    check_device(cfg.agent.device, source)
    return merged


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    trust_model: bool = False,
    source: str = "<config>",
    stop_at: int | None = None,
    stdout: IO[str] | None = None,
    overwrite: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train, select, evaluate (see the module docstring).

    Args:
        cfg: The resolved config.
        resume: Continue from ``<output.dir>/checkpoints/last.zip``.
        trust_model: Load the checkpoint even if its sidecar sha256 does not match.
        source: Where the config came from (for messages).
        stop_at: Behave as if Ctrl-C arrived once this many steps are done (tests).
        stdout: Where the report goes (default sys.stdout).
        overwrite: Replace an existing run directory (else it is refused).
        force: Resume even though the config changes what is learned.
    """
    out_stream = stdout or sys.stdout
    say: Callable[[str], None] = lambda text: print(text, file=out_stream, flush=True)  # noqa: E731
    _need_sb3()
    from cowlab_sb3.algos import make_model, set_torch_threads
    from cowlab_sb3.callback import TrainingMonitor, append_log, rollback_to_boundary
    from cowlab_sb3.policy import (
        ModelTrustError,
        Sb3Policy,
        atomic_write,
        file_sha256,
        load_model,
        save_model,
        verify_model,
    )
    from cowlab_sb3.vecenv import CowVecEnv
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed

    wall0 = time.perf_counter()
    algo = cfg.agent.algo.name
    hyperparameters = check_training_config(cfg, source)
    registry = get_registry()
    kernel = build_kernel_config(cfg.kernel, where=source)
    machine = build_machine(cfg.machine, where=source)
    geometry = build_geometry(cfg.geometry, where=source)
    train_entries = [e for _, e in workload_entries(cfg.workload, where=source)]
    eval_entries = list(cfg.eval.workloads) or train_entries

    out = prepare_run_dir(cfg, resume=resume, overwrite=overwrite, force=force)
    ckpt, buffer_path, log_path = out / CHECKPOINT, out / REPLAY_BUFFER, out / "log.jsonl"
    saved_cfg = out / "config.yaml"
    if resume and saved_cfg.exists() and saved_cfg.read_text(encoding="utf-8") != to_yaml(cfg):
        say(f"note: the config differs from the one saved in {saved_cfg} in settings "
            "that do not change what is learned; using the new one")
    save_config(cfg, saved_cfg)

    # -- seeding and threads (every random source, at the top) ---------------------------
    set_torch_threads(cfg.agent.torch_threads)
    set_random_seed(cfg.seed)

    # -- environments ----------------------------------------------------------------------
    kwargs = env_kwargs(cfg)

    env_timers: list[_Timed] = []  # each environment's timer (the env share)

    def make_env() -> gym.Env[Any, Any]:
        # Made directly, not with gym.make(ENV_ID): that wraps it in PassiveEnvChecker and
        # OrderEnforcing, two more Python calls at every step for checks the env needs
        # once (tests/test_env.py runs Gymnasium's and SB3's env checkers on it) or does
        # itself (a step without a pending fault raises).
        timed = _Timed(CowFaultEnv(**kwargs))
        env_timers.append(timed)
        return Monitor(timed)

    venv = CowVecEnv([make_env for _ in range(cfg.agent.n_envs)])
    tb_dir: str | None = None
    if cfg.output.tensorboard and importlib.util.find_spec("tensorboard") is not None:
        tb_dir = str(out / "tb")

    meta: dict[str, Any] = {
        "algo": algo,
        "action_mode": cfg.env.action_mode.name,
        "shield": cfg.env.shield,
        "max_primitives": cfg.env.max_primitives,
        "feature_names": list(venv.get_attr("feature_names")[0]),
        "kernel": kernel.name,
        "config": "config.yaml",
    }

    # -- the model -------------------------------------------------------------------------
    # Counters carried across sessions (a resume continues them from the checkpoint).
    prior: dict[str, Any] = {"violations": 0, "episodes": 0, "train_s": 0.0, "sessions": 0}
    if resume:
        try:
            model, ck_meta = load_model(ckpt, trust=trust_model, device=cfg.agent.device)
        except ModelTrustError as exc:
            raise TrainError(str(exc)) from None
        if ck_meta.get("algo", algo) != algo:
            raise TrainError(
                f"{ckpt}: a {ck_meta.get('algo')} checkpoint, but agent.algo is {algo}"
            )
        model.set_env(venv)
        if tb_dir is not None:
            model.tensorboard_log = tb_dir
        if buffer_path.exists() and hasattr(model, "load_replay_buffer"):
            want = ck_meta.get("replay_buffer_sha256")
            if not trust_model and want != file_sha256(buffer_path):
                raise TrainError(f"{buffer_path}: sha256 does not match the checkpoint's sidecar")
            model.load_replay_buffer(str(buffer_path))
        start = model.num_timesteps
        carried = ck_meta.get("progress")
        if isinstance(carried, dict):
            prior.update({k: carried[k] for k in prior if k in carried})
        venv.seed(cfg.seed + start)  # fresh, reproducible episodes after the resume point
        _truncate_log(log_path, start)
        say(f"resuming {out} at step {start} of {cfg.agent.total_timesteps}")
    else:
        try:
            model = make_model(algo, venv, hyperparameters=hyperparameters,
                               net_arch=list(cfg.agent.net_arch), seed=cfg.seed,
                               device=cfg.agent.device, tensorboard_log=tb_dir)
        except (AssertionError, TypeError, ValueError) as exc:
            # a value SB3 rejects that the schema-level check could not see
            raise TrainError(f"{source}: agent.{algo}: {algo} rejected the "
                             f"hyperparameters: {type(exc).__name__}: {exc}") from None
        start = 0
    clock = {"learn_start": time.perf_counter()}

    def progress_meta() -> dict[str, Any]:
        """The counters a checkpoint carries (all sessions up to now)."""
        return {"violations": monitor.violations, "episodes": monitor.episodes,
                "train_s": prior["train_s"] + time.perf_counter() - clock["learn_start"],
                "sessions": prior["sessions"] + 1}

    def checkpoint(model: BaseAlgorithm, steps: int) -> None:
        extra: dict[str, Any] = {"num_timesteps": steps, "progress": progress_meta()}
        if hasattr(model, "save_replay_buffer") and getattr(model, "replay_buffer", None):
            import io

            buf = io.BytesIO()
            model.save_replay_buffer(buf)
            atomic_write(buffer_path, buf.getvalue())
            extra["replay_buffer_sha256"] = file_sha256(buffer_path)
        save_model(model, ckpt, {**meta, **extra})

    best: dict[str, Any] = {}
    best_side = out / "best.zip.json"
    if resume and best_side.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            prior = json.loads(best_side.read_text(encoding="utf-8"))
            v = prior["validation"]
            best.update(score=(v["reuse_rate"] or 0.0, -v["mean_latency_ns"]),
                        steps=prior["num_timesteps"])
    timers = {"validation": 0.0, "checkpoint": 0.0}

    def validate(model: BaseAlgorithm, steps: int) -> Evaluation:
        t = time.perf_counter()
        ev = evaluate_policy(
            Sb3Policy(model, meta), kernel=kernel, workloads=eval_entries,
            seeds=validation_seeds(cfg.eval.validation_seeds),
            max_decisions=cfg.eval.max_decisions, machine=machine, geometry=geometry,
            registry=registry,
        )
        m = ev.metrics
        safe = m["violations_total"] == 0
        score = (m["reuse_rate"] or 0.0, -m["mean_latency_ns"])
        # Ties go to the later model: it has seen more of the task for the same score.
        improved = safe and ("score" not in best or score >= best["score"])
        if improved:
            best.update(score=score, steps=steps)
            save_model(model, out / "best.zip", {**meta, "num_timesteps": steps,
                                                  "validation": m})
        append_log(log_path, {"kind": "validation", "timesteps": steps,
                              "reuse_rate": m["reuse_rate"], "violations": m["violations"],
                              "mean_latency_ns": m["mean_latency_ns"], "best": improved})
        timers["validation"] += time.perf_counter() - t
        return ev

    marks = {"eval": start, "ckpt": start}

    def on_boundary(steps: int) -> None:
        every = cfg.eval.every_steps
        if every and steps - marks["eval"] >= every:
            marks["eval"] = steps
            validate(model, steps)
        every = cfg.output.checkpoint_every
        if every and steps - marks["ckpt"] >= every:
            marks["ckpt"] = steps
            t = time.perf_counter()
            checkpoint(model, steps)
            timers["checkpoint"] += time.perf_counter() - t

    monitor = TrainingMonitor(total=cfg.agent.total_timesteps, log_path=log_path,
                              progress=cfg.output.progress, on_boundary=on_boundary,
                              stop_at=stop_at, violations=int(prior["violations"]),
                              episodes=int(prior["episodes"]))

    def request_stop() -> None:
        monitor.stop_requested = True

    say(f"training {algo} on {ENV_ID} ({cfg.env.action_mode.name} mode, kernel {kernel.name}, "
        f"workloads {', '.join(e.name for e in train_entries)}) for "
        f"{cfg.agent.total_timesteps} steps -> {out}")
    for timer in env_timers:
        timer.seconds = 0.0
    remaining = cfg.agent.total_timesteps - start
    with _frozen_heap():
        t_learn = clock["learn_start"] = time.perf_counter()
        if remaining > 0:
            with _sigint_requests(request_stop):
                model.learn(total_timesteps=remaining, callback=monitor,
                            reset_num_timesteps=not resume, tb_log_name=algo)
        train_s = time.perf_counter() - t_learn
    steps_done = model.num_timesteps - start
    sps = steps_done / train_s if train_s > 0 else 0.0
    busy = train_s - timers["validation"] - timers["checkpoint"]
    env_seconds = sum(timer.seconds for timer in env_timers)
    env_share = env_seconds / busy if busy > 0 else 0.0
    venv.close()

    if monitor.stop_requested:
        dropped = rollback_to_boundary(model, monitor.boundary)
        # the dropped steps are redone after a resume: so are their counts
        monitor.violations, monitor.episodes = (monitor.boundary_violations,
                                                monitor.boundary_episodes)
        checkpoint(model, model.num_timesteps)
        now = model.num_timesteps - start
        say(f"interrupted: checkpoint at step {model.num_timesteps} written to {ckpt} "
            f"({dropped} untrained steps of the unfinished rollout dropped); trained "
            f"{now} steps in this process, {model.num_timesteps} in total; violations "
            f"during training so far: {monitor.violations}; continue with --resume")
        return TrainResult(out, None, model.num_timesteps, True,
                           time.perf_counter() - wall0, train_s, sps, env_share,
                           steps_this_process=now, training_violations=monitor.violations)

    checkpoint(model, model.num_timesteps)
    if marks["eval"] != model.num_timesteps:
        validate(model, model.num_timesteps)

    # -- select the model ------------------------------------------------------------------
    final = out / "model.zip"
    best_path = out / "best.zip"
    if best and best_path.exists():
        verify_model(best_path)
        shutil.copyfile(best_path, final)
        side = json.loads(Path(f"{best_path}.json").read_text(encoding="utf-8"))
        side.update(selected="best safe model on the validation seeds", versions=versions())
        atomic_write(Path(f"{final}.json"), (json.dumps(side, indent=2) + "\n").encode())
        chosen = f"step {best['steps']} (best safe model on the validation seeds)"
    else:
        save_model(model, final, {**meta, "num_timesteps": model.num_timesteps,
                                  "selected": "last model: none was safe on validation",
                                  "versions": versions()})
        chosen = "the last model: NO checkpoint was safe on the validation seeds"

    # -- final evaluation ------------------------------------------------------------------
    agent_name = f"agent ({algo})"
    try:
        agent_model, agent_meta = load_model(final)
    except ModelTrustError as exc:
        raise TrainError(str(exc)) from None
    seeds = eval_seeds(cfg.eval.seeds)
    evaluations = [
        evaluate_policy(Sb3Policy(agent_model, agent_meta, name=agent_name), kernel=kernel,
                        workloads=eval_entries, seeds=seeds, max_decisions=cfg.eval.max_decisions,
                        machine=machine, geometry=geometry, registry=registry)
    ]
    for name in cfg.eval.baselines:
        try:
            policy = registry.make_policy(name, cfg.eval.policy_params.get(name, {}),
                                          where=f"{source}: eval.baselines")
        except PluginError as exc:
            raise TrainError(str(exc)) from None
        evaluations.append(
            evaluate_policy(policy, kernel=kernel, workloads=eval_entries, seeds=seeds,
                            max_decisions=cfg.eval.max_decisions, machine=machine,
                            geometry=geometry, registry=registry)
        )
    table = format_table(evaluations, agent=agent_name)
    wall = time.perf_counter() - wall0
    header = (
        f"Evaluation: kernel {kernel.name}, workloads "
        f"{', '.join(f'{e.name} {e.params}' for e in eval_entries)}, "
        f"seeds {seeds[0]}..{seeds[-1]} (disjoint from training), "
        f"{cfg.eval.max_decisions} decisions per run; model: {chosen}"
    )
    steps_now = model.num_timesteps - start
    sessions = int(prior["sessions"]) + 1
    train_total = float(prior["train_s"]) + train_s
    summary = (
        f"trained {steps_now} steps in this process in {train_s:.1f} s ({sps:.0f} steps/s; "
        f"env {env_share:.0%} of the learning time, learner {1 - env_share:.0%}); "
        f"{model.num_timesteps} steps in total over {sessions} session(s), "
        f"{train_total:.1f} s of learning; wall time {wall:.1f} s; violations during "
        f"training: {monitor.violations} in total "
        f"({monitor.violations - int(prior['violations'])} in this process)"
    )
    say("")
    say(header)
    say(table)
    say(summary)
    say(f"model: {final} (use it as --policy sb3:{final})")
    report = {
        "config": "config.yaml",
        "model": str(final),
        "model_sha256": file_sha256(final),
        "selected": chosen,
        "num_timesteps": model.num_timesteps,
        "steps_this_process": steps_now,
        "sessions": sessions,
        "train_s": train_s,
        "train_s_total": train_total,
        "wall_s": wall,
        "steps_per_s": sps,
        "env_share": env_share,
        "training_violations": monitor.violations,
        "eval_seeds": seeds,
        "eval_workloads": [{"name": e.name, "params": e.params} for e in eval_entries],
        "table": table,
        "evaluations": [ev.to_dict() for ev in evaluations],
        "versions": versions(),
    }
    atomic_write(out / "eval.json", (json.dumps(report, indent=2, default=str) + "\n").encode())
    atomic_write(out / "eval.txt", f"{header}\n\n{table}\n\n{summary}\n".encode())
    atomic_write(out / "versions.json", (json.dumps(versions(), indent=2) + "\n").encode())
    write_manifest(out, ("config.yaml", *FINAL_FILES))  # last: the run is complete
    return TrainResult(out, final, model.num_timesteps, False, wall, train_s, sps, env_share,
                       table, evaluations, steps_this_process=steps_now,
                       training_violations=monitor.violations)
