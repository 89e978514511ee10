"""data-ingest: newly labelled images → data gate → new DVC data version → clip-har.data.arrived."""

from __future__ import annotations

from prefect import flow

from clip_har.settings import load_settings
from tasks.config import resolve_config
from tasks.data import emit_data_arrived, ingest_labelled, version_data


@flow(name="data-ingest", log_prints=True)
def data_ingest(folder: str, profile: str = "", overrides: list[str] | None = None) -> dict:
    """`folder` holds one sub-folder per class (e.g. `clip-har review export`)."""
    state = load_settings().state
    cfg = resolve_config(profile, overrides or [])
    data, added = ingest_labelled(cfg, state, folder)
    version = version_data(state, data)
    event = emit_data_arrived(version, added)
    return {"data_version": version.to_dict(), "added": added, "event_id": event}
