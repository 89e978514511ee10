"""A training run killed with SIGKILL is resumed by the next run of the same config, data version
and base weights; checkpoints are written so that a kill never leaves one half-written, and a
checkpoint that does not load is never resumed from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clip_har.config import load_config
from clip_har.data.versioning import DataVersion
from clip_har.locks import file_lock
from clip_har.pipeline import base_weights, prepare_data, resume, version_data
from clip_har.pipeline import train as train_stage
from clip_har.pipeline.prepare_data import DataRef
from clip_har.pipeline.rundir import RunDir
from clip_har.settings import StateDir, load_settings
from clip_har.tracking import client
from clip_har.train import checkpoint

# No pre-training (the base weights' part of the key is tested on its own) and no Bento: seconds.
FAST = ["data.synth.n=150", "data.synth.size=48", "pretrain.enabled=false", "train.max_epochs=3"]
FAST += ["export.package=false"]

# The pipeline's stages up to training, as the training-pipeline flow's tasks call them. The
# process stops dead once its first last.ckpt is on disk and waits to be killed, so the SIGKILL
# lands mid-training (before epoch 2) on any machine, however slow.
KILLED_PIPELINE = """
import sys, time
from pathlib import Path
from clip_har.config import load_config
from clip_har.pipeline import base_weights, prepare_data, train, validate_data, version_data
from clip_har.pipeline.rundir import RunDir
from clip_har.settings import load_settings
from clip_har.train import checkpoint

save = checkpoint.AtomicCheckpointIO.save_checkpoint
def save_then_hang(self, ckpt, path, storage_options=None):
    save(self, ckpt, path, storage_options)
    while Path(path).name == "last.ckpt":
        time.sleep(1)
checkpoint.AtomicCheckpointIO.save_checkpoint = save_then_hang

state = load_settings().state
cfg = load_config("tiny", sys.argv[1:])
run_dir = RunDir.new(state.runs)
data = prepare_data.run(cfg, state)
validate_data.run(cfg, data, run_dir.data_gate)
version = version_data.run(state, data)
train.run(cfg, state, data, version, base_weights.run(cfg, state), run_dir)
"""


def _start_killed_pipeline(state: StateDir, log: Path) -> RunDir:
    """Run KILLED_PIPELINE, SIGKILL it once its first last.ckpt exists; its run directory."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_PIPELINE, *FAST], stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 300  # a bound on a hung child, not a timing assertion
        while not (lasts := list(state.runs.glob("*/checkpoints/last.ckpt"))):
            assert proc.poll() is None, f"the pipeline exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint yet:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup, nothing flushed by the process itself
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return RunDir(lasts[0].parent.parent)


@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_pipeline_resumes_from_its_last_checkpoint(prefect_harness, state_dir: Path, tmp_path: Path) -> None:
    from flows.training_pipeline import training_pipeline

    state = load_settings().state
    killed = _start_killed_pipeline(state, tmp_path / "killed.log")
    record = resume.read_record(killed)
    assert record is not None and record.resumed_from == ""
    assert torch.load(killed.checkpoints / "last.ckpt", weights_only=False)["epoch"] == 0
    assert not killed.train_result.exists() and not killed.model.exists()  # nothing half-written to register
    c = client(state.mlflow_uri)
    assert c.get_run(record.mlflow_run_id).info.status == "RUNNING"
    cfg = load_config("tiny", FAST)
    data = prepare_data.run(cfg, state)  # what the flow's stages find: the same data, version and base
    version, base = version_data.run(state, data), base_weights.run(cfg, state)

    # Another data version, or another config: another training, which starts from scratch.
    other_version = DataVersion(version.name, "tiny-v9", "0" * 32, version.commit, version.registry)
    fresh = train_stage.run(cfg, state, data, other_version, base, RunDir.new(state.runs))
    assert fresh.resumed_from == "" and fresh.run_id != record.mlflow_run_id
    assert torch.load(fresh.last_checkpoint, weights_only=False)["epoch"] == 2
    other_cfg = load_config("tiny", [*FAST, "train.seed=1"])
    assert resume.find_interrupted(state.runs, resume.train_key(other_cfg, version, base)) is None
    assert not killed.resumed_by.exists()

    # The same training: the pipeline continues the killed run, then evaluates, gates, registers.
    out = training_pipeline(profile="tiny", overrides=FAST)
    run_dir = RunDir(Path(out["run_dir"]))
    assert resume.read_record(run_dir).resumed_from == str(killed.checkpoints / "last.ckpt")
    assert resume.read_record(run_dir).resumed_epochs == 1
    trained = json.loads(run_dir.train_result.read_text())
    assert trained["run_id"] == record.mlflow_run_id and trained["resumed_from"]
    assert trained["epochs"] == 3 and torch.load(trained["last_checkpoint"], weights_only=False)["epoch"] == 2
    assert json.loads(killed.resumed_by.read_text())["run_dir"] == str(run_dir.root)
    # one MLflow run, one metric history: epoch 0 from the killed process, 1 and 2 from the resume
    assert c.get_run(record.mlflow_run_id).info.status == "FINISHED"
    assert len(c.get_metric_history(record.mlflow_run_id, "val_f1")) == 3
    assert out["registration"]["promoted"]
    mv = c.get_model_version("clip-har", out["registration"]["version"])
    assert mv.run_id == record.mlflow_run_id and mv.tags["lineage.data_version"] == version.tag
    assert not killed.lineage.exists() and not killed.gate_decision.exists()  # the killed dir is never registered
    # That training finished: the next run of it starts anew.
    assert resume.find_interrupted(state.runs, record.key) is None


VERSION = DataVersion("tiny", "tiny-v1", "f" * 32, "0" * 40, "registry")


@pytest.fixture(scope="module")
def trained_run(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, str]:
    """A finished 2-epoch run of the tiny profile (real checkpoints) and its training key."""
    state = StateDir(tmp_path_factory.mktemp("trained") / "state")
    cfg = load_config("tiny", ["pretrain.enabled=false"])
    data = DataRef("tiny", str(tiny_data_master), "synth")
    run_dir = RunDir.new(state.runs)
    train_stage.run(cfg, state, data, VERSION, None, run_dir)
    return run_dir, resume.train_key(cfg, VERSION, None)


def _killed_copy(trained: RunDir, runs: Path) -> RunDir:
    """The trained run as a run killed after its last checkpoint: the same files, no TrainResult."""
    copy = RunDir(Path(shutil.copytree(trained.root, runs / trained.root.name)))
    copy.train_result.unlink()
    return copy


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda rd: _truncate(rd.checkpoints / "last.ckpt"), id="truncated-last"),
        pytest.param(lambda rd: (rd.checkpoints / "last.ckpt").write_bytes(b"\x00garbage" * 64), id="garbage-last"),
        pytest.param(lambda rd: (rd.checkpoints / "last.ckpt").unlink(), id="no-last"),
        pytest.param(lambda rd: _truncate(rd.checkpoints / "best.ckpt"), id="truncated-best"),
    ],
)
def test_a_checkpoint_that_does_not_load_is_not_resumed(damage, trained_run, tmp_path: Path) -> None:
    trained, key = trained_run
    killed = _killed_copy(trained, tmp_path / "runs")
    found = resume.find_interrupted(tmp_path / "runs", key)
    assert found is not None and found.run_dir == killed and found.epochs == 2  # intact: resumable
    damage(killed)
    notes: list[str] = []
    assert resume.find_interrupted(tmp_path / "runs", key, note=notes.append) is None
    assert len(notes) == 1 and notes[0].startswith(f"not resuming run {killed.root.name}: ")


def test_the_train_stage_starts_from_scratch_when_the_checkpoint_is_bad(
    trained_run, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained, _ = trained_run
    state = StateDir(tmp_path / "state")
    killed = _killed_copy(trained, state.runs)
    (killed.checkpoints / "last.ckpt").write_bytes(b"half a checkpoint")
    cfg, data = load_config("tiny", ["pretrain.enabled=false"]), DataRef("tiny", str(tiny_data), "synth")
    result = train_stage.run(cfg, state, data, VERSION, None, RunDir.new(state.runs))
    assert f"not resuming run {killed.root.name}: " in capsys.readouterr().out
    assert result.resumed_from == "" and result.epochs == 2
    assert not killed.resumed_by.exists()


def test_a_run_still_training_is_not_taken_over(trained_run, tmp_path: Path) -> None:
    trained, key = trained_run
    live = _killed_copy(trained, tmp_path / "runs")
    notes: list[str] = []
    with file_lock(live.train_lock):  # as the training process holds it
        assert resume.find_interrupted(tmp_path / "runs", key, note=notes.append) is None
    assert notes == [f"not resuming run {live.root.name}: it is still training"]
    assert resume.find_interrupted(tmp_path / "runs", key) is not None  # the lock's holder died


def test_resuming_in_a_new_run_dir_keeps_the_best_checkpoint_bookkeeping(trained_run, tmp_path: Path) -> None:
    trained, key = trained_run
    killed = _killed_copy(trained, tmp_path / "runs")
    found = resume.find_interrupted(tmp_path / "runs", key)
    assert found is not None
    new = RunDir.new(tmp_path / "runs")
    last = resume.adopt(found, new)
    assert last == new.checkpoints / "last.ckpt" and (new.checkpoints / "best.ckpt").is_file()
    before = torch.load(found.checkpoint, weights_only=False)["callbacks"]
    after = torch.load(last, weights_only=False)["callbacks"]
    assert before.keys() == after.keys() and len(after) >= 2
    for name, st in after.items():
        if name.startswith("ModelCheckpoint"):
            # Lightning restores the best score only when the directory matches its own
            assert st["dirpath"] == os.path.realpath(new.checkpoints)
            assert st["best_model_score"] == before[name]["best_model_score"]
            assert all(Path(p).parent == Path(st["dirpath"]) for p in st["best_k_models"])
    assert torch.load(killed.checkpoints / "last.ckpt", weights_only=False)["callbacks"] == before  # untouched


def test_the_training_key_covers_config_data_version_and_base_weights(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    base = tmp_path / "base.pt"
    base.write_bytes(b"weights 1")
    key = resume.train_key(cfg, VERSION, str(base))
    assert resume.train_key(load_config("tiny"), VERSION, str(base)) == key
    assert resume.train_key(load_config("tiny", ["train.max_epochs=3"]), VERSION, str(base)) != key
    assert resume.train_key(cfg, DataVersion("tiny", "tiny-v2", "e" * 32, "1" * 40, "registry"), str(base)) != key
    base.write_bytes(b"weights 2")  # the same file name, re-made with other content
    assert resume.train_key(cfg, VERSION, str(base)) != key


def test_a_kill_during_a_checkpoint_save_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = checkpoint.AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 0, "w": torch.zeros(256)}, path)
    pid = os.fork()
    if pid == 0:  # the child is SIGKILLed halfway through writing epoch 1's checkpoint

        def write_half_then_die(obj: object, f) -> None:
            f.write(b"PK\x03\x04" + b"\x00" * 4096)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = write_half_then_die
        io.save_checkpoint({"epoch": 1, "w": torch.ones(256)}, path)
        os._exit(0)  # never reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert torch.load(path, weights_only=False)["epoch"] == 0
    # the half-written bytes went to a temp file beside it: the same filesystem, so the rename
    # that would have published them is atomic (a temp in the system temp dir may not be)
    (leftover,) = (p for p in path.parent.iterdir() if p != path)
    assert leftover.name.startswith(".last.ckpt.") and leftover.stat().st_size > 0
    with pytest.raises(checkpoint.CheckpointError, match="does not load"):
        checkpoint.read_checkpoint(leftover)
