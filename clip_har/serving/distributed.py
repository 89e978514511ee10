"""Batch inference spread over a Dask cluster (`distributed`), for more files than one machine
gets through.

Why Dask: a scheduler and workers are two commands on any host with this package installed
(`dask scheduler`, `dask worker tcp://host:8786`), it runs on Kubernetes (dask-kubernetes) and
SLURM (dask-jobqueue) unchanged, and prefect-dask speaks to the same cluster; Ray would bring a
second runtime of its own for what is here a map over chunks.

Nothing needs a shared disk: the model's files travel to the workers (scattered under a key of
their content, so two runs with two models on one cluster never mix them up; each worker writes
and loads a model once, cached by digest) and each chunk's file bytes travel with it. The rows come back in input
order, a file that cannot be read or decoded is a row with its error, as in one process.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from clip_har.serving.batch import Row, predict_files

CHUNK_FILES = 64  # files per task: enough to fill a batch several times, small enough to spread
CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 60  # a scheduler with no workers would otherwise queue the chunks forever


def model_files(onnx_dir: Path) -> dict[str, bytes]:
    """Every file of a model directory by relative path: what a worker needs to serve it."""
    root = Path(onnx_dir)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


_models: dict[tuple[str, int, str], object] = {}  # (digest, threads, backend) → Predictor, per worker process
_models_lock = threading.Lock()
KEEP_MODELS = 2  # per worker process: the models of the runs in flight, not every model ever sent


def _local_dir() -> Path:
    """The Dask worker's own scratch folder (cleaned with the worker), else the temp folder."""
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory)
    except (ImportError, ValueError):  # not inside a worker (a direct call)
        return Path(tempfile.gettempdir())


def _predictor(files: dict[str, bytes], digest: str, threads: int, backend: str = "auto"):
    """The model on this worker, written to local disk and loaded once per worker process
    (`auto`: the backend is chosen by each worker for its own machine, a GPU where it has one)."""
    from clip_har.serving.predictor import Predictor

    key = (digest, threads, backend)
    with _models_lock:
        if key not in _models:
            if _digest(files) != digest:  # once per model and process: what arrived is what was sent
                raise ValueError(f"model files do not match their digest {digest}")
            root = _local_dir() / f"clip-har-model-{digest}"
            if not root.is_dir():
                part = Path(tempfile.mkdtemp(prefix=root.name + "."))
                for name, data in files.items():
                    (part / name).parent.mkdir(parents=True, exist_ok=True)
                    (part / name).write_bytes(data)
                try:
                    part.rename(root)  # whole or absent, also for another worker process on this host
                except OSError:
                    shutil.rmtree(part, ignore_errors=True)  # another process got there first
            _models[key] = Predictor(root, backend, threads=threads)
            while len(_models) > KEEP_MODELS:
                _models.pop(next(iter(_models)))
        return _models[key]


def predict_chunk(
    model: dict[str, bytes],
    digest: str,
    chunk: list[tuple[str, bytes | str]],
    batch_size: int,
    top_k: int,
    video_fps: float,
    threads: int = 0,
    backend: str = "auto",
) -> list[Row]:
    """On a worker: (original path, its bytes, or the error reading it) → rows, in order."""
    predictor = _predictor(model, digest, threads, backend)
    rows: dict[int, list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="clip-har-chunk-") as tmp:
        local: dict[str, int] = {}  # where a file was written here → its place in the chunk
        for i, (name, data) in enumerate(chunk):
            if isinstance(data, str):  # the client could not read it
                rows[i] = [Row(name, error=data)]
                continue
            path = Path(tmp) / f"{i:06d}{Path(name).suffix}"  # the suffix tells images from videos
            path.write_bytes(data)
            local[str(path)] = i
        # one decode thread per task: the Dask worker's own threads are the parallelism here
        files = [Path(p) for p in local]
        for row in predict_files(predictor, files, batch_size, top_k, video_fps, workers=1):
            i = local[row.path]
            rows.setdefault(i, []).append(replace(row, path=chunk[i][0]))
    return [row for i in range(len(chunk)) for row in rows.get(i, [])]


def _read(files: list[Path]) -> list[tuple[str, bytes | str]]:
    out: list[tuple[str, bytes | str]] = []
    for f in files:
        try:
            out.append((str(f), f.read_bytes()))
        except OSError as exc:  # reported in its row, like an undecodable file
            out.append((str(f), str(exc) or type(exc).__name__))
    return out


def predict_distributed(
    address: str,
    onnx_dir: Path,
    files: list[Path],
    batch_size: int,
    top_k: int,
    video_fps: float,
    chunk_files: int = CHUNK_FILES,
    threads: int = 0,
    progress: Callable[[int], None] | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    backend: str = "auto",
) -> list[Row]:
    """Rows for `files`, in order, computed by the Dask cluster at `address` (tcp://host:8786).
    At most two chunks per worker thread are in flight, so the client's memory holds a few chunks'
    bytes, not the whole input. `threads`: ONNX Runtime threads per worker task (0: its default).
    `batch_size` 0: by each worker's backend (clip_har.serving.batch)."""
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise RuntimeError("distributed batch inference needs Dask: pip install 'clip-har[scale]'") from exc

    if chunk_files < 1:
        raise ValueError("chunk_files must be at least 1")
    chunks = [files[i : i + chunk_files] for i in range(0, len(files), chunk_files)]
    results: list[list[Row] | None] = [None] * len(chunks)
    try:
        client = Client(address, timeout=connect_timeout_s)
    except OSError as exc:
        raise ConnectionError(f"no Dask scheduler at {address}: {exc}") from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError as exc:
            raise ConnectionError(f"the Dask scheduler at {address} has no workers") from exc
        files_of_model = model_files(onnx_dir)
        digest = _digest(files_of_model)
        # one object under a key of its content: a dict would be scattered under its own keys
        # ("image.onnx", ...), which another run's model on the same cluster would share
        (model,) = client.scatter([files_of_model], broadcast=True, hash=True)
        slots = max(2, 2 * sum(client.nthreads().values()))
        index: dict[str, int] = {}
        pending = as_completed()
        todo = iter(range(len(chunks)))

        def submit(i: int) -> None:
            chunk = _read(chunks[i])
            # pure=False: two identical chunks (a file listed twice) are two tasks, not one shared key
            future = client.submit(
                predict_chunk, model, digest, chunk, batch_size, top_k, video_fps, threads, backend, pure=False
            )
            index[future.key] = i
            pending.add(future)

        for i in todo:
            submit(i)
            if len(index) >= slots:
                break
        for future in pending:
            i = index[future.key]
            results[i] = future.result()  # a worker's exception (not a file's) fails the run
            if progress:
                progress(len(chunks[i]))
            nxt = next(todo, None)
            if nxt is not None:
                submit(nxt)
    missing = [i for i, part in enumerate(results) if part is None]
    if missing:
        raise RuntimeError(f"no rows came back for chunks {missing}")
    return [row for part in results for row in part or []]
