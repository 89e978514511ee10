"""The summary `make demo` prints after a pipeline run."""

from __future__ import annotations

import typer

from clip_har.state import StateDir


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
    echo(f"run dir:       {result['run_dir']}")
    echo("where to look:")
    echo(f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {state.mlflow_uri} --port 5000")
    echo(f"  Prefect UI:  PREFECT_HOME={state.prefect_home} .venv/bin/prefect server start --host 127.0.0.1")
    echo("  champion:    .venv/bin/clip-har status --json")
