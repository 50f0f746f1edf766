"""A trained stable-baselines3 model as a cowlab reuse policy, and safe model files.

Model files (SB3 zip archives) contain pickles: loading one runs code. So a model is
loaded only if

* its sha256 equals the one recorded at training time in the sidecar file
  ``<model>.json`` written next to it (:func:`save_model`), or
* the user trusts it explicitly: ``trust=True`` (``--policy sb3:PATH`` with
  ``cowlab --trust-model``), or ``COWLAB_TRUST_MODELS=1`` in the environment.

The sidecar also carries what the policy needs to observe a fault the way the agent
was trained (action mode, shield, primitive budget, feature names). The check catches a
model file that was replaced or altered on its own; it cannot help against someone who
can rewrite both files, so only use run directories you trust.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cowlab.env import (
    OBSERVATION_NAMES,
    PRIMITIVE_ACTIONS,
    apply_primitive,
    exclusive_proven,
    observation_array,
    observe,
    primitive_mask,
)
from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = [
    "TRUST_ENV",
    "ModelTrustError",
    "Sb3Params",
    "Sb3Policy",
    "atomic_write",
    "file_sha256",
    "load_model",
    "make_sb3_policy",
    "read_sidecar",
    "save_model",
    "sidecar_path",
]

#: Set to 1 to load model files without a matching sidecar.
TRUST_ENV = "COWLAB_TRUST_MODELS"


class ModelTrustError(ValueError):
    """A model file that must not be loaded (no sidecar, or a sha256 mismatch)."""


@dataclass(frozen=True)
class Sb3Params:
    """Parameters of the ``sb3`` policy."""

    #: The model file (``runs/NAME/model.zip``).
    path: str
    #: Load it even without a matching sidecar sha256 (model files are pickles).
    trust: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must name a model file, e.g. sb3:runs/exclusive/model.zip")


def sidecar_path(model: str | Path) -> Path:
    """``model.zip`` -> ``model.zip.json``."""
    return Path(f"{model}.json")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: BaseAlgorithm, path: str | Path, meta: dict[str, Any]) -> str:
    """Save ``model`` and its sidecar (sha256 + ``meta``) atomically; return the sha256.

    The model is written first, then the sidecar: a crash in between leaves a model
    whose sidecar does not match, which is refused rather than trusted.
    """
    buf = io.BytesIO()
    model.save(buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path, data)
    side = {"sha256": digest, **meta}
    atomic_write(sidecar_path(path), (json.dumps(side, indent=2, default=str) + "\n").encode())
    return digest


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar of a model file, or None if there is none (or it is unreadable)."""
    side = sidecar_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _trusted(trust: bool) -> bool:
    return trust or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def _check_manifest(path: Path) -> None:
    """A model inside a finished ``cowlab train`` run must be the one its run's
    ``manifest.json`` names (written last, with the evaluation): otherwise the run
    directory mixes files of two runs."""
    manifest = path.parent / "manifest.json"
    if not manifest.is_file():
        return
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        raise ModelTrustError(f"{manifest}: not a cowlab run manifest") from None
    want = files.get(path.name) if isinstance(files, dict) else None
    if want is not None and want != file_sha256(path):
        raise ModelTrustError(f"{path}: does not match the run's {manifest.name} (the "
                              "directory mixes files of two runs; its evaluation is of "
                              "another model)")


def verify_model(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Check that ``path`` may be loaded; return its sidecar (``{}`` if trusted without one).

    Raises:
        ModelTrustError: Missing file, no sidecar, or a sha256 mismatch (untrusted).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelTrustError(f"{path}: no such model file")
    _check_manifest(path)
    meta = read_sidecar(path)
    how = (f"pass --trust-model (or trust=true, or {TRUST_ENV}=1) only if you trust "
           "whoever made the file: model files are pickles and loading one runs code")
    if _trusted(trust):
        return meta or {}
    if meta is None or not isinstance(meta.get("sha256"), str):
        raise ModelTrustError(
            f"{path}: refusing to load: no sidecar {sidecar_path(path).name} with the sha256 "
            f"recorded at training time; {how}"
        )
    digest = file_sha256(path)
    if digest != meta["sha256"]:
        raise ModelTrustError(
            f"{path}: refusing to load: its sha256 {digest[:16]}... does not match "
            f"{meta['sha256'][:16]}... recorded at training time in "
            f"{sidecar_path(path).name} (the file was changed); {how}"
        )
    return meta


def load_model(path: str | Path, *, trust: bool = False, device: str = "cpu") -> tuple[
    BaseAlgorithm, dict[str, Any]
]:
    """Verify (:func:`verify_model`) and load a model; return it with its sidecar."""
    from cowlab_sb3.algos import algo_class

    meta = verify_model(path, trust=trust)
    algos = [meta["algo"]] if "algo" in meta else ["ppo", "maskable_ppo", "dqn"]
    last: Exception | None = None
    for algo in algos:
        try:
            return algo_class(algo).load(str(path), device=device), meta
        except Exception as exc:  # wrong class for the file: try the next
            last = exc
    raise ModelTrustError(f"{path}: not a stable-baselines3 model this cowlab can load: {last}")


class Sb3Policy:
    """A reuse policy that asks a trained model (the env's observation of the fault).

    Deterministic: the model's most likely action. Answers are memoised per
    observation (the observation is a short, mostly discrete vector), which makes
    evaluating an agent nearly as fast as a built-in policy.
    """

    def __init__(self, model: BaseAlgorithm, meta: dict[str, Any] | None = None,
                 name: str = "agent") -> None:
        meta = meta or {}
        self.name = name
        self.model = model
        self.primitives = meta.get("action_mode", "decision") == "primitives"
        self.shield = bool(meta.get("shield", False))
        self.max_primitives = int(meta.get("max_primitives", 4))
        names = meta.get("feature_names")
        expected = list(OBSERVATION_NAMES) + (["primitives_used"] if self.primitives else [])
        if names is not None and list(names) != expected:
            raise ModelTrustError(
                "the model was trained on features "
                f"{names} but this cowlab observes {expected}"
            )
        self._maskable = type(model).__name__ == "MaskablePPO"
        self._cache: dict[bytes, int] = {}

    def reset(self, seed: int | None) -> None:
        """Deterministic: nothing to reseed."""

    def _act(self, obs: np.ndarray, mask: np.ndarray) -> int:
        key = obs.tobytes() + mask.tobytes()
        action = self._cache.get(key)
        if action is None:
            if self._maskable:
                pred, _ = self.model.predict(  # type: ignore[call-arg]
                    obs, deterministic=True, action_masks=mask
                )
            else:
                pred, _ = self.model.predict(obs, deterministic=True)
            action = self._cache[key] = int(pred)
        return action

    def decide(self, fault: FaultView) -> Decision:
        """Observe, act; in primitives mode apply primitives until copy or reuse."""
        used = 0
        while True:
            values = observe(fault, self.primitives, used, self.max_primitives)
            if self.primitives:
                allowed = primitive_mask(fault, used, self.max_primitives, self.shield)
            else:
                allowed = [True, exclusive_proven(fault) if self.shield else True]
            obs = observation_array(values)
            action = self._act(obs, np.array(allowed, dtype=bool))
            if action == 1:
                if self.shield and not exclusive_proven(fault):
                    return Decision.COPY.because("shield")
                return Decision.REUSE
            if action == 0 or not self.primitives or used >= self.max_primitives:
                return Decision.COPY.because("policy")
            if allowed[action]:
                apply_primitive(fault, PRIMITIVE_ACTIONS[action])
            used += 1


def make_sb3_policy(path: str, trust: bool = False) -> Sb3Policy:
    """The ``sb3`` policy factory: verify and load ``path``."""
    model, meta = load_model(path, trust=trust)
    return Sb3Policy(model, meta, name=f"sb3:{path}")
