"""`clip-har`: the command line. Library commands run in-process; `pipeline run` and `data add`
run their Prefect flow against the local stack's server when it is up (`clip-har up`), else in
ephemeral mode. Errors print one readable line and exit non-zero."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from clip_har.config import ConfigError, PipelineConfig, available_profiles, load_config
from clip_har.settings import Settings, SettingsError, StateDir, load_settings
from clip_har_cli.rollout import rollout_app

app = typer.Typer(help="clip-har: train, gate and track a CLIP human-action recognizer.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: synthesize, ingest, validate, list versions.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Run Prefect flows.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(pipeline_app, name="pipeline")
review_app = typer.Typer(help="The review queue of uncertain predictions (active learning).", no_args_is_help=True)
app.add_typer(review_app, name="review")
app.add_typer(rollout_app, name="rollout")

Profile = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="Profile name (see `clip-har profiles`) or a YAML file; default: CLIP_HAR_PROFILE, else demo.",
    ),
]
Overrides = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override, e.g. train.max_epochs=3.")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc), 2)


def _config(profile: str, overrides: list[str] | None) -> PipelineConfig:
    try:
        return load_config(profile, overrides or [])
    except (ConfigError, SettingsError) as exc:
        fail(str(exc), 2)


def _state() -> StateDir:
    from clip_har_cli.stack import prefect_client_env

    settings = _settings()
    state = settings.state
    # With the stack up, flows run against its server (with its basic auth when it has one):
    # their runs show in the UI and their events (e.g. `data add` → clip-har.data.arrived) reach
    # the automations. A PREFECT_API_URL already set wins.
    state.apply_env(extra=prefect_client_env(state, settings))
    return state


@app.command()
def profiles() -> None:
    """List the available profiles."""
    for name in available_profiles():
        typer.echo(name)


@app.command()
def config(profile: Profile = "", overrides: Overrides = None) -> None:
    """Print the resolved config of a profile with overrides."""
    typer.echo(_config(profile, overrides).model_dump_json(indent=2))


@data_app.command("synth")
def data_synth(
    out: Path,
    profile: Profile = "",
    n: Annotated[int | None, typer.Option(help="Images (default: the profile's data.synth.n)")] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed (default: the profile's)")] = None,
    size: Annotated[int | None, typer.Option(help="Stored image size (default: the profile's)")] = None,
    style: Annotated[str | None, typer.Option(help="day or night (a drift scenario; default: the profile's)")] = None,
) -> None:
    """Render the profile's synthetic action world (images + manifest.csv) into OUT."""
    import time

    from clip_har.pipeline.prepare_data import synth_spec
    from clip_har.synth.generate import synthesize

    if style not in (None, "day", "night"):
        fail(f"unknown style {style!r}; use day or night", 2)
    spec = synth_spec(_config(profile, []), n, seed, style, size)
    t0 = time.time()
    try:
        synthesize(out, spec)
    except ValueError as exc:
        fail(str(exc), 2)
    typer.echo(f"{spec.n} images in {out} ({time.time() - t0:.1f}s)")


@data_app.command("ingest")
def data_ingest(
    source: Path,
    out: Path,
    kind: str = typer.Option("folder", help="folder (one sub-folder per class) or csv (path,label[,split])"),
    seed: int = 0,
    allow_outside: bool = typer.Option(False, "--allow-outside", help="csv: rows may name files outside its folder"),
) -> None:
    """Build a data root (copied images + manifest) from an image folder or a CSV."""
    from clip_har.data.manifest import from_csv, from_folder

    if kind not in ("folder", "csv"):
        fail(f"unknown kind {kind!r}; use folder or csv", 2)
    try:
        if kind == "csv":
            from_csv(source, out, seed=seed, allow_outside=allow_outside)
        else:
            from_folder(source, out, seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc), 2)
    typer.echo(f"data root written to {out}")


@data_app.command("validate")
def data_validate(root: Path, profile: Profile = "", overrides: Overrides = None) -> None:
    """Run the data gate (Great Expectations) on a data root; exit 1 if it fails."""
    cfg = _config(profile, overrides)
    from clip_har.data.validate import validate_data

    report = validate_data(root, cfg.data)
    typer.echo(report.to_text())
    if not report.success:
        raise typer.Exit(1)


@data_app.command("add")
def data_add(folder: Path, profile: Profile = "", overrides: Overrides = None) -> None:
    """Add labelled images (one sub-folder per class) to the profile's dataset: the data-ingest
    flow (data gate, new data version, clip-har.data.arrived)."""
    if not folder.is_dir():
        fail(f"no such folder: {folder}", 2)
    profile = _config(profile, overrides).profile  # the resolved name is what the flow run records
    _state()
    from flows.data_ingest import data_ingest

    try:
        result = data_ingest(folder=str(folder), profile=profile, overrides=list(overrides or []))
    except Exception as exc:  # the flow logged the details (gate report included)
        fail(f"data ingest failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
    typer.echo(f"{result['added']} images added → data version {result['data_version']['tag']}")


@data_app.command("versions")
def data_versions(
    name: Annotated[str | None, typer.Option(help="Dataset (default: the profile's data.name)")] = None,
) -> None:
    """List the data versions (registry tags) of a dataset."""
    from clip_har.data.versioning import list_versions

    for tag in list_versions(_state().data_registry, name or _config("", []).data.name):
        typer.echo(tag)


@app.command()
def train(
    data_root: Annotated[Path, typer.Option(help="Data root with manifest.csv")],
    out: Annotated[Path, typer.Option(help="Run directory for checkpoints and the model")],
    profile: Profile = "",
    overrides: Overrides = None,
    base_weights: Annotated[Path | None, typer.Option(help="Base CLIP weights file")] = None,
    resume: Annotated[Path | None, typer.Option(help="Checkpoint to resume from")] = None,
) -> None:
    """Train once, outside Prefect (DDP/FSDP ranks re-run this command)."""
    from clip_har.pipeline.rundir import RunDir
    from clip_har.train import launch

    state = _state()
    args = launch.argv(
        profile,
        overrides or [],
        data_root,
        out,
        state.mlflow_uri,
        base_weights,
        resume=resume,
        result=RunDir(out).train_result,
    )
    out.mkdir(parents=True, exist_ok=True)
    raise typer.Exit(launch.main(args))


@pipeline_app.command("run")
def pipeline_run(
    profile: Profile = "",
    overrides: Overrides = None,
    reason: str = typer.Option("manual", help="Why this run starts (recorded with it)."),
) -> None:
    """Run the training pipeline flow (Prefect ephemeral mode) and print a summary."""
    profile = _config(profile, overrides).profile  # fail fast, before Prefect starts
    state = _state()
    from clip_har_cli.report import print_summary
    from flows.training_pipeline import training_pipeline

    try:
        result = training_pipeline(profile=profile, overrides=list(overrides or []), reason=reason)
    except Exception as exc:  # the flow already logged the traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(str(exc), err=True)
        fail(f"training pipeline failed: {first}")
    print_summary(result, state)


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders, CSVs (a 'path' column) or videos")],
    out: Annotated[Path, typer.Option(help="Output file: .csv or .json")] = Path("predictions.csv"),
    batch_size: Annotated[int | None, typer.Option(help="Images per batch (default: the flow's)")] = None,
    top_k: Annotated[int | None, typer.Option(help="Labels per row (default: the flow's)")] = None,
    fps: Annotated[
        float | None, typer.Option(help="Frames per second sampled from videos (default: the flow's)")
    ] = None,
) -> None:
    """Batch inference with the champion model (the batch-inference flow)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}", 2)
    if out.suffix.lower() not in (".csv", ".json"):
        fail("--out must end in .csv or .json", 2)
    _state()
    from flows.batch_inference import batch_inference

    given = {"batch_size": batch_size, "top_k": top_k, "video_fps": fps}
    try:
        result = batch_inference(
            inputs=[str(p) for p in paths], output=str(out), **{k: v for k, v in given.items() if v is not None}
        )
    except LookupError as exc:
        fail(str(exc))
    typer.echo(
        f"{result['rows']} predictions ({result['errors']} unreadable) by champion v{result['model_version']} → {out}"
    )


def _model_dir(model: Path | None) -> tuple[str, Path]:
    """(a name for it, the directory) of `--model`, else of the registered champion (its PyTorch
    artifact, downloaded once into the state dir's cache, as `clip-har serve` fetches its export)."""
    if model is not None:
        if not model.is_dir():
            fail(f"no such model directory: {model}", 2)
        return str(model), model
    from clip_har.registry import champion_model_dir
    from clip_har.tracking import client

    state, name = _state(), _settings().model_name
    if not state.has_registry:
        fail("no champion yet: run `make demo` first, or pass --model DIR")
    try:
        version, path = champion_model_dir(client(state.mlflow_uri), name, state.cache / "champion")
    except LookupError as exc:
        fail(str(exc))
    return f"champion {name} v{version}", path


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="An image file")],
    label: Annotated[str | None, typer.Option(help="A class of the model (default: the predicted one)")] = None,
    out: Annotated[Path, typer.Option(help="The heat map over the image, PNG")] = Path("overlay.png"),
    grid_json: Annotated[Path | None, typer.Option("--json", help="Also write label, score and grid as JSON")] = None,
    model: Annotated[
        Path | None, typer.Option(help="A model directory (PyTorch artifact); default: the registered champion")
    ] = None,
) -> None:
    """Where the model looks: a heat map of the image regions that drive a label (Layer-CAM for
    convolutional image towers, gradient-weighted attention rollout for ViTs)."""
    if not image.is_file():
        fail(f"no such file: {image}", 2)
    if out.suffix.lower() != ".png":
        fail("--out must end in .png", 2)
    name, model_dir = _model_dir(model)
    from clip_har.explain import Explainer

    try:
        explainer = Explainer.from_dir(model_dir)
        found = explainer.explain_bytes(image.read_bytes(), label, _settings().max_pixels)
    except (FileNotFoundError, ValueError) as exc:  # no PyTorch weights; undecodable, over a limit, unknown label
        fail(str(exc), 2)
    out.write_bytes(found.overlay_png)
    if grid_json is not None:
        grid_json.write_text(json.dumps({"model": name, **found.to_dict()}, indent=1))
    typer.echo(
        f"{found.label} {found.score:.3f} (predicted {found.predicted}) by {name}, {found.method} → {out}"
        + (f", {grid_json}" if grid_json else "")
    )


def _backend_for(champion) -> dict[str, str]:  # a deployments.bento_pack.ServedChampion
    """No backend for a model stored with its export record: the service's `auto` serves the CPU
    backend the gate checked on CPUs and the fastest checked GPU backend on GPUs. A model packaged
    before records were stored with it gets the backend its lineage names, as before."""
    import bentoml

    from clip_har.export.verify import RECORD
    from clip_har.settings import env_name

    if (Path(bentoml.models.get(champion.bento_model).path) / RECORD).is_file():
        return {}
    return {env_name("backend"): champion.backend}


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default: CLIP_HAR_PORT, else 3000)")] = None,
    host: Annotated[str | None, typer.Option(help="Address (default: CLIP_HAR_HOST, else 127.0.0.1)")] = None,
) -> None:
    """Serve the champion's Bento model over HTTP (BentoML, ONNX Runtime)."""
    import os

    from clip_har.settings import child_env, env_name

    state, settings = _state(), _settings()
    host, port = host or settings.host, port or settings.port
    try:
        settings.check_exposure(host)
    except SettingsError as exc:
        fail(str(exc), 2)
    from deployments.bento_pack import served_champion  # BentoML, with BENTOML_HOME set by _state()

    try:
        champion = served_champion(state, settings.model_name)
    except LookupError as exc:
        fail(str(exc))
    env = child_env({env_name("model"): champion.bento_model, **_backend_for(champion)})
    typer.echo(f"serving champion v{champion.version} ({champion.bento_model}) on http://{host}:{port}")
    deployments = Path(__file__).resolve().parents[1] / "deployments"
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", host, "--port", str(port)]
    os.chdir(deployments)
    os.execve(sys.executable, cmd, env)  # the server replaces this process: one PID to stop


@app.command()
def up() -> None:
    """Start the local stack (Prefect server + worker, MLflow UI, the champion's service) on
    loopback, unless CLIP_HAR_STACK_HOST / CLIP_HAR_HOST say otherwise."""
    from clip_har_cli.stack import up as stack_up

    _settings()  # a bad setting is one line, before anything starts
    try:
        urls = stack_up(typer.echo)
    except RuntimeError as exc:
        fail(str(exc))
    for name, url in urls.items():
        typer.echo(f"{name:8} {url}")
    typer.echo(f"logs and PIDs: {_state().stack}; `clip-har` flows (pipeline run, data add) now run on this server")


@app.command()
def down() -> None:
    """Stop the local stack (service and worker before the server)."""
    from clip_har_cli.stack import down as stack_down

    _settings()
    if not stack_down(typer.echo):
        typer.echo("nothing running")


@app.command("loop-demo")
def loop_demo(
    normal: Annotated[int, typer.Option(help="Normal images sent (at least 200: a drift check's minimum)")] = 300,
    night: Annotated[int, typer.Option(help="Night-style images sent (at least 200)")] = 600,
    timeout: Annotated[float, typer.Option(help="Seconds for the automated part (training included)")] = 1800,
) -> None:
    """The closed loop end to end on the local stack: normal traffic → night traffic → drift and
    new labelled data → automated retraining → gate → promotion → the service switches."""
    from clip_har_cli.loop import LoopError, LoopSettings, run_loop

    if min(normal, night) < 200:
        fail("--normal and --night must be at least 200 (fewer predictions get an 'insufficient data' verdict)", 2)
    _settings()
    try:
        result = run_loop(LoopSettings(n_normal=normal, n_night=night, timeout_s=timeout), typer.echo)
    except LoopError as exc:
        fail(str(exc))
    acc, before, after = result["night_accuracy"], result["model_before"], result["model_after"]
    if not result["promoted"]:
        typer.echo(f"the gate kept the champion: the service still serves {before} (see the gate line above)")
    typer.echo(f"night-style accuracy: {acc['before']} with {before}, {acc['after']} with {after}")


def _review():  # a ReviewQueue, imported lazily
    from clip_har.monitoring.review import ReviewQueue

    return ReviewQueue(_state().review)


@review_app.command("list")
def review_list(labelled: bool = typer.Option(False, help="Show labelled items instead of pending ones")) -> None:
    """Uncertain predictions waiting for a label (or already labelled)."""
    items = _review().items("labelled" if labelled else "pending")
    for i in items:
        typer.echo(
            f"{i.id}  predicted={i.predicted} score={i.score:.3f} entropy={i.entropy:.3f}"
            + (f" label={i.label}" if i.label else "")
        )
    typer.echo(f"{len(items)} item(s)")


@review_app.command("label")
def review_label(item_id: str, label: str) -> None:
    """Give a pending item its true label."""
    classes = list(_config("", []).data.classes)
    try:
        item = _review().label(item_id, label, classes)
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""), 2)
    typer.echo(f"{item.id} labelled {item.label} (was predicted {item.predicted})")


@review_app.command("export")
def review_export(
    dest: Path, again: bool = typer.Option(False, "--again", help="Include items exported before")
) -> None:
    """Labelled items not exported before, as an image folder (one sub-folder per class) for
    `clip-har data add`."""
    n = _review().export(dest, again)
    typer.echo(f"{n} labelled image(s) exported to {dest}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """The champion model: version, metrics, data version and lineage."""
    from clip_har.registry import champion_status
    from clip_har.tracking import client

    state = _state()
    info = champion_status(client(state.mlflow_uri), _settings().model_name) if state.has_registry else None
    if as_json:
        typer.echo(json.dumps(info or {"champion": None, "state_dir": str(state.root)}, indent=2, default=str))
        return
    if info is None:
        typer.echo(f"no champion yet (state dir {state.root}); run `make demo`")
        return
    typer.echo(f"champion: {info['model_name']} v{info['version']} (run {info['run_id']})")
    typer.echo(f"data version: {info['data_version']}")
    for k, v in sorted(info["metrics"].items()):
        if "." not in k:
            typer.echo(f"  {k}: {v:.4f}")


if __name__ == "__main__":
    app()
