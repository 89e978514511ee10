"""The training pipeline's stages, one module each, named as in the README's stage table.

Each stage module has one entry point, `run(...)`: small inputs (config, StateDir, RunDir, small
dataclasses), small outputs. Prefect tasks in `tasks/` wrap exactly one `run` each; tests call
them directly. Nothing here knows about an orchestrator. This package imports nothing itself,
so `rundir` stays importable from the trainer without pulling in every stage.
"""
