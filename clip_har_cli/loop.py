"""`clip-har loop-demo`: the closed loop, end to end, on the running stack.

Normal traffic (no alarm) → night-style traffic → the review queue keeps the novel images and
a reviewer labels them → data-ingest (new data version, `clip-har.data.arrived`) and
drift-monitor (`clip-har.drift.detected`) → the automations start one training run (the other
stands down) → gate → promotion (`clip-har.model.promoted`) → service-reload → the service
answers with the new version. Every step goes through the stack's deployments and events;
the demo only plays the users (traffic) and the reviewer (labels, from the synthetic truth).
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from clip_har.config import PipelineConfig, load_config
from clip_har.data.manifest import read_manifest
from clip_har.data.versioning import list_versions
from clip_har.monitoring.monitor import last_verdict, start_window
from clip_har.monitoring.predlog import read_log
from clip_har.monitoring.review import ReviewQueue
from clip_har.pipeline.prepare_data import synth_spec
from clip_har.registry import latest_registration
from clip_har.retrain import is_event_triggered, window_start
from clip_har.serving.client import model_info, predict_files
from clip_har.settings import StateDir, env_name, load_settings
from clip_har.synth.generate import synthesize
from clip_har.tracking import client
from clip_har_cli import stack


class LoopError(RuntimeError):
    pass


@dataclass
class LoopSettings:
    n_normal: int = 300  # images per traffic phase (a drift check needs at least 200)
    # Night images become labelled data, and 15% of them test rows: enough that fixing night
    # outweighs run-to-run noise on the day rows in the gate's comparison.
    n_night: int = 600
    per_request: int = 8
    concurrency: int = 4
    timeout_s: float = 1800  # for the whole automated part (training included)
    seed: int = field(default_factory=lambda: int(time.time()) % 1_000_000)


@dataclass
class Step:
    t_s: float
    step: str
    detail: str
    flow_run: str = ""


class Timeline:
    def __init__(self, echo=print) -> None:
        self.t0, self.steps, self.echo = time.monotonic(), [], echo

    def add(self, step: str, detail: str, flow_run: str = "") -> None:
        s = Step(round(time.monotonic() - self.t0, 1), step, detail, flow_run)
        self.steps.append(s)
        self.echo(f"{s.t_s:7.1f}s  {step:<16} {detail}" + (f"  [flow run {flow_run}]" if flow_run else ""))

    def to_dict(self) -> list[dict]:
        return [asdict(s) for s in self.steps]


@dataclass
class Traffic:
    labels: dict[Path, str]  # image file → true label

    def truth(self) -> dict[str, str]:
        """sha256 of the image bytes → true label: how the reviewer recognises queued copies."""
        return {hashlib.sha256(f.read_bytes()).hexdigest(): label for f, label in self.labels.items()}


def render(cfg: PipelineConfig, dest: Path, n: int, seed: int, style: str) -> Traffic:
    root = synthesize(dest, synth_spec(cfg, n=n, seed=seed, style=style))
    manifest = read_manifest(root)
    return Traffic({root / p: label for p, label in zip(manifest.path, manifest.label, strict=True)})


def send(url: str, traffic: Traffic, s: LoopSettings) -> dict[str, Any]:
    """Every image once through POST /predict; accuracy against the truth and versions seen."""
    files = sorted(traffic.labels)
    chunks = [files[i : i + s.per_request] for i in range(0, len(files), s.per_request)]
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(s.concurrency) as pool:
        answers = list(pool.map(lambda chunk: (chunk, predict_files(client, url, chunk)), chunks))
    right, versions = 0, set()
    for chunk, body in answers:
        versions.add(body["model_version"])
        right += sum(r["label"] == traffic.labels[f] for f, r in zip(chunk, body["results"], strict=True))
    return {"n": len(files), "accuracy": round(right / max(len(files), 1), 3), "versions": sorted(versions)}


def wait_logged(state: StateDir, since: float, n: int, seconds: float = 60) -> int:
    """The service writes its log off the request path: wait until the phase's rows are in."""
    deadline, got = time.time() + seconds, 0
    while time.time() < deadline:
        got = len(read_log(state.predictions, since=since)[0])
        if got >= n:
            return got
        time.sleep(1)
    raise LoopError(f"only {got} of {n} predictions reached the log within {seconds:.0f}s")


def label_queue(state: StateDir, truth: dict[str, str], classes: list[str], dest: Path) -> dict[str, int]:
    """The reviewer: label the pending items that came from this demo's traffic, export them."""
    queue, counts = ReviewQueue(state.review), {"novel": 0, "uncertain": 0}
    for item in queue.items():
        image = queue.image(item)
        label = truth.get(hashlib.sha256(image.read_bytes()).hexdigest()) if image.is_file() else None
        if label is not None:
            queue.label(item.id, label, classes)
            counts["novel" if item.reason.startswith("novel") else "uncertain"] += 1
    return {**counts, "exported": queue.export(dest)}


def run_deployment_and_wait(name: str, parameters: dict, timeout_s: float) -> Any:  # a FlowRun
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters=parameters, timeout=timeout_s)
    if not run.state or not run.state.is_completed():
        msg = run.state.message if run.state else "no state"
        raise LoopError(f"{name} flow run {run.id} ended {run.state.name if run.state else '?'}: {msg}")
    return run


def runs_since(deployment: str, since: datetime) -> list[Any]:
    """Flow runs of a deployment created after `since`, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    return sorted((r for r in runs if r.created and r.created >= since), key=lambda r: r.created)


def wait_for_runs(deployment: str, since: datetime, deadline: float, need: int = 1) -> list[Any]:
    """Wait until at least `need` runs exist and all of them reached a final state."""
    while time.time() < deadline:
        runs = runs_since(deployment, since)
        if len(runs) >= need and all(r.state and r.state.is_final() for r in runs):
            return runs
        time.sleep(3)
    raise LoopError(f"timed out waiting for {deployment} runs triggered after {since:%H:%M:%S}")


def run_detail(run: Any) -> str:
    reason = (run.parameters or {}).get("reason") or (run.parameters or {}).get("bento_model", "")
    message = f" ({run.state.message})" if run.state and run.state.message and not run.state.is_completed() else ""
    return f"{run.state.name if run.state else '?'}{message}; {reason}"[:300]


# deployments as `flow-name/deployment-name` (prefect.yaml names each deployment after its flow)
TRAINING, DRIFT, INGEST, RELOAD = (
    f"{n}/{n}" for n in ("training-pipeline", "drift-monitor", "data-ingest", "service-reload")
)


def check_cooldown(cooldown_s: float) -> None:
    """An automated training run inside the cooldown would make this loop's run stand down."""
    recent = [r for r in runs_since(TRAINING, window_start(cooldown_s)) if is_event_triggered(_reason(r))]
    if recent:
        raise LoopError(
            f"an automated training run ({recent[-1].id}) started within the retraining cooldown "
            f"({cooldown_s:.0f}s), so this loop's run would stand down; wait, or restart the stack "
            f"with {env_name('retrain_cooldown_s')}=0"
        )


def _reason(run: Any) -> str:  # a FlowRun
    return str((run.parameters or {}).get("reason", ""))


def ensure_service(state: StateDir, urls: dict[str, str], tl: Timeline, echo=print) -> str:
    if "service" not in urls:
        run = run_deployment_and_wait(TRAINING, {"reason": "manual: first champion for the loop demo"}, 3600)
        tl.add("first champion", "trained one: there was no packaged champion", str(run.id))
        urls = stack.up(echo)
    if "service" not in urls or not stack.wait_http(f"{urls['service']}/readyz", 300):
        raise LoopError(f"the service did not come up; see {stack.log_path(state, 'service')}")
    return urls["service"]


def drift_check(state: StateDir, tl: Timeline) -> dict:
    run = run_deployment_and_wait(DRIFT, {}, 600)
    verdict = last_verdict(state.reports) or {}
    scores = ", ".join(f"{k} {v:.3f}" for k, v in verdict.get("scores", {}).items())
    tl.add("drift check", f"{verdict.get('status')} ({verdict.get('n_current', 0)} predictions; {scores})", str(run.id))
    return verdict


def traffic_phase(state: StateDir, url: str, traffic: Traffic, s: LoopSettings, tl: Timeline, name: str) -> dict:
    since = time.time()
    result = send(url, traffic, s)
    wait_logged(state, since, result["n"])
    tl.add(name, f"{result['n']} images, accuracy {result['accuracy']}, answered by {', '.join(result['versions'])}")
    return result


def automation_phase(state: StateDir, model_name: str, since: datetime, s: LoopSettings, tl: Timeline) -> dict:
    """What the events started: training (one run goes ahead), the gate, the service switch."""
    deadline = time.time() + s.timeout_s
    # one run per event (data arrived, drift detected); one goes ahead, the other stands down
    for run in wait_for_runs(TRAINING, since, deadline, need=2):
        tl.add("training", run_detail(run), str(run.id))
    reg = latest_registration(client(state.mlflow_uri), model_name)
    if reg.get("status") != "champion":  # the safety net at work: nothing else moves
        tl.add("gate", f"REJECT v{reg['version']}: {reg.get('rejected_because', '?')}")
        return reg
    tl.add("gate", f"PROMOTE v{reg['version']} (macro-F1 {reg.get('macro_f1')}) → {reg.get('lineage.bento_model')}")
    for run in wait_for_runs(RELOAD, since, deadline):
        tl.add("service-reload", run_detail(run), str(run.id))
    return reg


def run_loop(s: LoopSettings, echo=print) -> dict:
    """The whole loop on the stack (started if needed); the timeline is also saved as JSON."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = load_settings()
    state = settings.state
    state.apply_env()
    cfg, tl, work = load_config(), Timeline(echo), state.loop / str(s.seed)
    urls = stack.up(echo)
    tl.add("stack", ", ".join(f"{k} {v}" for k, v in urls.items()))
    with temporary_settings({PREFECT_API_URL: f"{urls['prefect']}/api"}):
        check_cooldown(settings.retrain_cooldown_s)
        url = ensure_service(state, urls, tl, echo)
        before = model_info(url)["model_version"]
        start_window(state.reports)
        tl.add("service", f"serving {before}; the drift window starts now")
        day = render(cfg, work / "day", s.n_normal, s.seed, "day")
        normal = traffic_phase(state, url, day, s, tl, "normal traffic")
        if drift_check(state, tl).get("status") == "drift":
            raise LoopError("same-distribution traffic raised a drift alarm (a false alarm); see the report")
        night = render(cfg, work / "night", s.n_night, s.seed + 1, "night")
        night_before = traffic_phase(state, url, night, s, tl, "night traffic")
        counts = label_queue(state, night.truth() | day.truth(), list(cfg.data.classes), work / "labelled")
        tl.add("review", f"reviewer labelled {counts['novel']} novel + {counts['uncertain']} uncertain images")
        since = datetime.now(UTC)
        run = run_deployment_and_wait(INGEST, {"folder": str(work / "labelled")}, 900)
        version = list_versions(state.data_registry, cfg.data.name)[-1]
        tl.add("data-ingest", f"{counts['exported']} labelled images → data version {version}", str(run.id))
        if drift_check(state, tl).get("status") != "drift":
            raise LoopError("night-style traffic was not detected as drift")
        reg = automation_phase(state, settings.model_name, since, s, tl)
        after = model_info(url)["model_version"]
        held_out = render(cfg, work / "night-held-out", s.n_normal, s.seed + 2, "night")
        night_after = traffic_phase(state, url, held_out, s, tl, "new night images")
        promoted = reg.get("status") == "champion"
        if night_after["versions"] != [after] or promoted == (after == before):
            raise LoopError(f"the service answers with {night_after['versions']}; registry v{reg['version']}: {reg}")
    result = {
        "timeline": tl.to_dict(),
        "model_before": before,
        "model_after": after,
        "registry_version": reg["version"],
        "promoted": promoted,
        "night_accuracy": {"before": night_before["accuracy"], "after": night_after["accuracy"]},
        "day_accuracy_before": normal["accuracy"],
    }
    out = state.loop / f"timeline-{s.seed}.json"
    out.write_text(json.dumps(result, indent=2))
    tl.add("done", f"{before} → {after}; timeline saved to {out}")
    return result
