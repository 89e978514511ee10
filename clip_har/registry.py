"""MLflow model registry: versions, the `champion` alias, rejected versions, lineage lookups
(the `challenger` alias of a shadow rollout: clip_har.rollout_registry)."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clip_har.gate import GateDecision
from clip_har.metrics import EvalReport
from clip_har.pipeline.rundir import EVAL, EVAL_REPORT, LINEAGE, MODEL, ONNX
from clip_har.settings import StateDir
from clip_har.tracking import client

CHAMPION = "champion"
CHALLENGER = "challenger"  # a gated model scoring live traffic in shadow before it may become champion
SHADOW = "shadow"  # the status tag of such a version
REPORT_ARTIFACT = f"{EVAL}/{EVAL_REPORT}"  # what the evaluate stage logs


class ChampionMoved(RuntimeError):
    """The champion is no longer the one the gate compared against: gate again."""

    def __init__(self, gated_against: str | None, now: str | None) -> None:
        super().__init__(f"the champion moved from {gated_against or 'none'} to v{now} since the gate ran")
        self.gated_against, self.now = gated_against, now


@dataclass
class Registration:
    model_name: str
    version: str
    promoted: bool
    champion_version: str | None  # the champion after this registration
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


def champion_version(c: MlflowClient, name: str) -> str | None:
    try:
        return str(c.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def champion_report(c: MlflowClient, name: str) -> tuple[str | None, EvalReport | None]:
    """The champion's version and its held-out report (from its training run's artifacts)."""
    version = champion_version(c, name)
    if version is None:
        return None, None
    mv = c.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        path = c.download_artifacts(mv.run_id, REPORT_ARTIFACT, tmp)
        return version, EvalReport.load(Path(path))


def register(
    c: MlflowClient, name: str, run_id: str, decision: GateDecision, lineage: dict[str, str], shadow: bool = False
) -> Registration:
    """Create a version for the run's `model/` artifact; move the alias only if the gate passed,
    and only if the champion is still the one the gate compared against (compare-and-set; the
    pipeline holds the model-registry lock around this, so nothing moves in between), else
    ChampionMoved and nothing is created. `shadow`: a passed model becomes the `challenger`
    (status "shadow") and the champion stays, until its rollout decides (clip_har.rollout)."""
    if decision.promote and (now := champion_version(c, name)) != decision.champion_version:
        raise ChampionMoved(decision.champion_version, now)
    try:
        c.create_registered_model(name, description="clip-har action recognizer")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    source = f"{c.get_run(run_id).info.artifact_uri}/{MODEL}"
    status = (SHADOW if shadow else "promoting") if decision.promote else "rejected"
    tags = {
        "status": status,
        "macro_f1": f"{decision.candidate_macro_f1:.6f}",
        **{f"lineage.{k}": str(v) for k, v in lineage.items()},
    }
    if not decision.promote:
        tags["rejected_because"] = "; ".join(decision.reasons)[:4000]
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=tags)
    version = str(mv.version)
    if decision.promote and shadow:
        c.set_registered_model_alias(name, CHALLENGER, version)
    elif decision.promote:
        # The alias is the one switch that moves the champion; everything before it is inert.
        c.set_registered_model_alias(name, CHAMPION, version)
        c.set_model_version_tag(name, version, "status", CHAMPION)
        if decision.champion_version:
            c.set_model_version_tag(name, decision.champion_version, "status", "superseded")
    promoted = decision.promote and not shadow
    status = CHAMPION if promoted else tags["status"]
    return Registration(name, version, promoted, champion_version(c, name), status)


def champion_status(c: MlflowClient, name: str) -> dict | None:
    """What `clip-har status` shows: champion version, metrics, data version, lineage."""
    version = champion_version(c, name)
    if version is None:
        return None
    mv = c.get_model_version(name, version)
    run = c.get_run(mv.run_id)
    lineage = {k.removeprefix("lineage."): v for k, v in mv.tags.items() if k.startswith("lineage.")}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lineage_file = json.loads(Path(c.download_artifacts(mv.run_id, LINEAGE, tmp)).read_text())
        except (MlflowException, OSError):
            lineage_file = {}
    return {
        "model_name": name,
        "version": version,
        "source": mv.source,
        "run_id": mv.run_id,
        "created": mv.creation_timestamp,
        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith(("test_", "zero_shot_"))},
        "data_version": lineage.get("data_version"),
        "lineage": {**lineage, **lineage_file},
    }


def _champion_artifact(c: MlflowClient, name: str, dest: Path, artifact: str, marker: str) -> tuple[str, Path]:
    version = champion_version(c, name)
    if version is None:
        raise LookupError(f"no champion for model {name!r}: run the training pipeline first")
    return version, version_artifact(c, name, version, dest, artifact, marker)


def version_artifact(c: MlflowClient, name: str, version: str, dest: Path, artifact: str, marker: str) -> Path:
    """One artifact folder of a registered version, downloaded once into `dest`/<name>-v<version>.
    Downloaded beside and renamed into place: an interrupted download is never taken for one,
    and two processes fetching at once both end with the whole folder."""
    target = Path(dest) / f"{name}-v{version}"
    if not (target / artifact / marker).is_file():
        run_id = c.get_model_version(name, version).run_id
        target.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=f".{artifact}.", dir=target))
        try:
            c.download_artifacts(run_id, artifact, str(part))
            if not (part / artifact / marker).is_file():
                raise LookupError(f"version {version} of {name!r} has no {artifact}/{marker} (run {run_id})")
            if (target / artifact).exists() and not (target / artifact / marker).is_file():
                shutil.rmtree(target / artifact, ignore_errors=True)  # a partial download of an older version
            try:
                (part / artifact).rename(target / artifact)
            except OSError:  # another process put it there first
                pass
        except MlflowException as exc:
            raise LookupError(f"version {version} of {name!r} has no {artifact!r} artifact (run {run_id})") from exc
        finally:
            shutil.rmtree(part, ignore_errors=True)
    return target / artifact


def champion_onnx(c: MlflowClient, name: str, dest: Path) -> tuple[str, Path]:
    """The champion's version and its exported ONNX directory (downloaded once into `dest`)."""
    from clip_har.export.onnx_export import ONNX_META

    return _champion_artifact(c, name, dest, ONNX, ONNX_META)


def champion_model_dir(c: MlflowClient, name: str, dest: Path) -> tuple[str, Path]:
    """The champion's version and its PyTorch model artifact (downloaded once into `dest`)."""
    from clip_har.models.artifact import META

    return _champion_artifact(c, name, dest, MODEL, META)


@dataclass(frozen=True)
class ServedChampion:
    version: str
    bento_model: str  # the BentoML model-store tag the service loads
    backend: str  # the backend the gate checked


def champion_bento(state: StateDir, name: str) -> ServedChampion:
    """What serves the champion; LookupError says why nothing can (none yet, or not packaged)."""
    none_yet = LookupError("no champion yet: run `make demo` first")
    # No registry yet: never open a client, which would create the database (racing an MLflow
    # server that is creating it at the same moment, as `clip-har up` starts one).
    if not state.has_registry:
        raise none_yet
    c = client(state.mlflow_uri)
    version = champion_version(c, name)
    if version is None:
        raise none_yet
    tags = c.get_model_version(name, version).tags
    if not tags.get("lineage.bento_model"):
        raise LookupError(f"champion v{version} was not packaged (no BentoML model); rerun the pipeline")
    return ServedChampion(version, tags["lineage.bento_model"], tags.get("lineage.serve_backend", "onnx"))


def latest_registration(c: MlflowClient, name: str) -> dict[str, str]:
    """The newest version of the model (promoted or rejected) with its tags."""
    mv = max(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    return {"version": str(mv.version), **mv.tags}
