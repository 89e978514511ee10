"""The summary `make demo` prints after a pipeline run."""

from __future__ import annotations

import typer

from clip_har.settings import StateDir, load_settings


def print_summary(result: dict, state: StateDir) -> None:
    reg, gate = result["registration"], result["gate"]
    zs = gate["zero_shot_macro_f1"]
    echo = typer.echo
    echo("")
    echo("=== clip-har training pipeline ===")
    echo(f"reason:        {result['reason']}")
    echo(f"data version:  {result['data_version']['tag']} ({result['data_version']['md5']})")
    echo(f"test accuracy: {result['accuracy']:.4f}   macro-F1: {result['macro_f1']:.4f}   zero-shot macro-F1: {zs:.4f}")
    champ = gate["champion_macro_f1"]
    echo(
        f"gate:          {'PROMOTE' if gate['promote'] else 'REJECT'}"
        + (f" (champion macro-F1 {champ:.4f})" if champ else "")
    )
    for r in gate["rules"]:
        echo(f"  - {r['name']}: {'pass' if r['passed'] else 'FAIL'} - {r['detail']}")
    echo(f"registry:      {reg['model_name']} v{reg['version']} -> {reg['status']}")
    echo(f"champion:      v{reg['champion_version']}")
    if reg["status"] == "shadow":
        echo("rollout:       it shadows the champion on live traffic first: `clip-har rollout status`")
    echo(f"run dir:       {result['run_dir']}")
    times = stage_times(result.get("flow_run_id"))
    if times:
        echo("stage times:   " + ", ".join(f"{name} {sec:.1f}s" for name, sec in times))
    echo("where to look:")
    settings = load_settings()
    if state.mlflow_uri.startswith(("http://", "https://")):  # a tracking server: its UI is its address
        echo(f"  MLflow UI:   {state.mlflow_uri}")
    else:
        echo(f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {state.mlflow_uri} --port {settings.mlflow_port}")
    echo(
        f"  Prefect UI:  PREFECT_HOME={state.prefect_home} .venv/bin/prefect server start --host 127.0.0.1"
        f" --port {settings.prefect_port}   (or `make up`)"
    )
    echo("  champion:    .venv/bin/clip-har status --json")


def stage_times(flow_run_id: str | None) -> list[tuple[str, float]]:
    """(task name, seconds) of a flow run, in start order, from the Prefect API."""
    if not flow_run_id:
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    except Exception:  # timings are a nicety; never fail the summary over them
        return []
    runs = sorted((r for r in runs if r.start_time), key=lambda r: r.start_time)
    return [(r.name.rsplit("-", 1)[0], r.total_run_time.total_seconds()) for r in runs]
