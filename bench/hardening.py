"""What hostile inputs cost the real service (`bentoml serve`), before and after the hardening of
issue 10: the commit before it (f23cdbc, a temporary git worktree) against the working tree.

Cases: a tiny PNG of extreme aspect ratio, a 1080p video sampled at full rate, a 300 MB body
declared by Content-Length and sent chunked, /readyz while a video request runs. Each case runs
on a fresh service (a clean baseline; a crash stays in its case) with the same limits, the same
model and the same interpreter; RSS is the whole process tree of `bentoml serve`.

Run: .venv/bin/python bench/hardening.py [--runs 3] [--cases image-aspect-25k,...]
Needs the demo model in .clip-har/bentoml (`make demo`). Writes bench/results/hardening.json and
prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from select import select
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.responsiveness import one_run, write_video  # noqa: E402 - after the path set-up above
from bench.serving import free_port  # noqa: E402
from clip_har_cli.stack import wait_http  # noqa: E402

BASE = "f23cdbc"  # the last commit before the hardening work
# Both versions get these explicitly (the defaults of today), so a later change of defaults
# cannot make the comparison unequal; the old code reads the same variable names.
LIMITS = {
    "CLIP_HAR_MAX_PIXELS": "50000000",
    "CLIP_HAR_MAX_FILES": "16",
    "CLIP_HAR_MAX_FILE_MB": "10",
    "CLIP_HAR_MAX_VIDEO_MB": "100",
    "CLIP_HAR_MAX_FRAMES": "300",
}
TIMEOUT_S = 120.0  # per request: an old version that hangs is a result, not a stuck bench
SAMPLE_S = 0.02
MB = 1_000_000
BIG_BODY = 300 * MB
CHUNK = b"\0" * MB


class ServiceTree:
    """Sums over `bentoml serve` and every process below it (entry and batched workers)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def _sum(self, read: Callable[[psutil.Process], float]) -> float:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            try:
                total += read(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
                pass  # a process that ended between listing and reading
        return total

    def rss(self) -> float:
        return self._sum(lambda p: p.memory_info().rss)

    def cpu_s(self) -> float:
        return self._sum(lambda p: p.cpu_times().user + p.cpu_times().system)

    def written(self) -> float:
        # bytes passed to write(): temp files of uploads (socket sends do not count)
        return self._sum(lambda p: p.io_counters().write_chars)

    def reset_peaks(self) -> None:
        """Restart each process's VmHWM (its exact peak RSS): a spike shorter than SAMPLE_S still shows."""

        def reset(p: psutil.Process) -> float:
            Path(f"/proc/{p.pid}/clear_refs").write_text("5")
            return 0.0

        self._sum(reset)

    def peaks(self) -> float:
        def hwm(p: psutil.Process) -> float:
            line = next(x for x in Path(f"/proc/{p.pid}/status").read_text().splitlines() if x.startswith("VmHWM"))
            return int(line.split()[1]) * 1024

        return self._sum(hwm)


@contextmanager
def sampled_peak(tree: ServiceTree) -> Iterator[list[float]]:
    """The largest tree RSS seen every SAMPLE_S while the block runs (a one-item list)."""
    peak, stop = [tree.rss()], threading.Event()

    def loop() -> None:
        while not stop.wait(SAMPLE_S):
            peak[0] = max(peak[0], tree.rss())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def measure(tree: ServiceTree, proc: subprocess.Popen, request: Callable[[], dict]) -> dict:
    """One request, with the tree's RSS before, during and after, its CPU time and its writes."""
    tree.reset_peaks()
    rss0, cpu0, written0 = tree.rss(), tree.cpu_s(), tree.written()
    t0 = time.perf_counter()
    with sampled_peak(tree) as peak:
        try:
            out = request()
        except Exception as exc:  # a dead or hung service is a result
            out = {"status": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    wall = time.perf_counter() - t0
    return {
        **out,
        "wall_s": round(wall, 3),
        "rss_before_mb": round(rss0 / MB),
        "rss_peak_mb": round(peak[0] / MB),
        "rss_growth_mb": round((peak[0] - rss0) / MB),
        "hwm_sum_mb": round(tree.peaks() / MB),  # per-process exact peaks, summed: an upper bound
        "rss_after_mb": round(tree.rss() / MB),
        "cpu_s": round(tree.cpu_s() - cpu0, 2),
        "written_mb": round((tree.written() - written0) / MB, 1),
        "service_alive": proc.poll() is None,
    }


def post_file(url: str, field: str, name: str, data: bytes, form: dict[str, str] | None = None) -> dict:
    r = httpx.post(url, files=[(field, (name, data))], data=form or {}, timeout=TIMEOUT_S)
    return {"status": r.status_code, **({} if r.status_code == 200 else {"answer": r.text[:160]})}


def _pump(sock: socket.socket, pieces: Iterator[bytes], deadline: float) -> int:
    """Send until done, or until the server answers or hangs up; the bytes sent."""
    sent = 0
    for piece in pieces:
        view = memoryview(piece)
        while view:
            readable, writable, _ = select([sock], [sock], [], max(deadline - time.monotonic(), 0))
            if readable:
                return sent  # an answer before the body ended: stop sending, as a client would
            if not writable:
                raise TimeoutError("the server neither read nor answered")
            try:
                n = sock.send(view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return sent
            view, sent = view[n:], sent + n
    return sent


def post_raw_body(url: str, path: str, size: int, chunked: bool) -> dict:
    """A multipart body of one `size`-byte video part over a plain socket. httpx would only see
    the answer after sending all of it (or lose it to a reset), so this reads it as it comes."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
    boundary = "hardeningbench"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + size + len(tail)}"
    request_head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\nConnection: close\r\n\r\n"
    ).encode()

    def pieces() -> Iterator[bytes]:
        for part in (head, *[CHUNK] * (size // len(CHUNK)), tail):
            yield b"%x\r\n%b\r\n" % (len(part), part) if chunked else part
        if chunked:
            yield b"0\r\n\r\n"

    deadline = time.monotonic() + TIMEOUT_S
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall(request_head)
        sock.setblocking(False)
        sent = _pump(sock, pieces(), deadline)
        sock.settimeout(max(deadline - time.monotonic(), 0.1))
        answer = _read_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 else None
    answered = {"answer": body.decode(errors="replace")[:160]} if status else {}
    return {"status": status, "client_sent_mb": round(sent / MB, 1), **answered}


def _read_answer(sock: socket.socket) -> bytes:
    """Status, headers and a Content-Length body; whatever came before a reset or the end."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and len(body) >= int(length[1] if length else 0):
                break
    except ConnectionResetError:
        pass  # what arrived before the reset is still the answer
    return answer


def readyz_under_video(url: str, video: bytes) -> dict:
    """bench/responsiveness.py's run, bounded: its poll loop only ends when the video answers."""
    box: dict = {}

    def run() -> None:
        try:
            box.update(one_run(url, video))
        except Exception as exc:  # a dead service is a result
            box["error"] = f"{type(exc).__name__}: {exc}"[:200]

    thread = threading.Thread(target=run, daemon=True)  # ends with the service if it never answers
    thread.start()
    thread.join(TIMEOUT_S * 2)
    if thread.is_alive():
        return {"status": None, "error": f"no answer in {TIMEOUT_S * 2:.0f} s"}
    return {"status": box.pop("video_status", None), **box}


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    request: Callable[[str], dict]  # service URL → {"status", ...}


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG", optimize=True)  # black: ~1 KB whatever the size
    return buf.getvalue()


def smooth_video(path: Path, frames: int, width: int, height: int, fps: int) -> bytes:
    """A moving gradient: large frames in a small file (noise at 1080p passes the upload limit
    before it has enough frames), which is what a hostile upload would be."""
    import av

    ramp = np.linspace(0, 255, width, dtype=np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            row = ((ramp + 4 * i) % 256).astype(np.uint8)
            rgb = np.broadcast_to(row[None, :, None], (height, width, 3)).copy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def make_cases(work: Path) -> list[Case]:
    video_1080 = smooth_video(work / "v1080.mp4", frames=300, width=1920, height=1080, fps=30)
    video_720 = write_video(work / "v720.mp4").read_bytes()  # responsiveness.py's video
    cases = []
    for w, h in ((100_000, 4), (200_000, 2)):
        data = png(w, h)
        cases.append(
            Case(
                f"image-aspect-{w // h // 1000}k",
                f"/predict, a {len(data)}-byte black PNG of {w}x{h} px ({w * h} px, aspect {w // h}:1)",
                lambda url, data=data: post_file(f"{url}/predict", "images", "wide.png", data),
            )
        )
    frames = f"1920x1080 moving gradient, 300 frames at 30 fps ({len(video_1080) / MB:.1f} MB)"
    cases += [
        Case(
            "video-1080p",
            f"/predict_video fps=30, {frames}: every frame sampled",
            lambda url: post_file(f"{url}/predict_video", "video", "v.mp4", video_1080, {"fps": "30"}),
        ),
        Case(
            "body-300mb-length",
            "/predict_video, a 300 MB multipart body with Content-Length",
            lambda url: post_raw_body(url, "/predict_video", BIG_BODY, chunked=False),
        ),
        Case(
            "body-300mb-chunked",
            "/predict_video, a 300 MB multipart body sent chunked",
            lambda url: post_raw_body(url, "/predict_video", BIG_BODY, chunked=True),
        ),
        Case(
            "readyz-under-video",
            "/readyz polled while /predict_video runs (bench/responsiveness.py: 1280x720, 100 frames, fps=10)",
            lambda url: readyz_under_video(url, video_720),
        ),
    ]
    return cases


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the service's process group (BentoML's shutdown hooks run), then SIGKILL what is
    left of it: a worker whose parent died still holds its memory."""
    for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass  # still there: SIGKILL next


def service_env(tree: Path, work: Path, tag: str) -> dict[str, str]:
    """Identical for both versions but for PYTHONPATH, which makes the tree's `clip_har` win over
    the venv's editable install; nothing reaches the caller's state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_HAR_")}
    return {
        **env,
        **LIMITS,
        "PYTHONPATH": str(tree),
        "BENTOML_HOME": str(work / "bentoml"),  # its own: BentoML empties prometheus_multiproc_dir at start
        "BENTOML_DO_NOT_TRACK": "true",
        "CLIP_HAR_MODEL": tag,
        "CLIP_HAR_HOME": str(work / "state"),
        "CLIP_HAR_PREDICTION_LOG": str(work / "predictions"),
        "CLIP_HAR_REVIEW_DIR": str(work / "review"),
        "TMPDIR": str(work / "tmp"),  # upload temp files land here, not in the shared /tmp
    }


def imported_from(tree: Path, env: dict[str, str]) -> str:
    """Where the service's `clip_har` comes from; refuses a tree that would not be the one measured."""
    out = subprocess.run(
        [sys.executable, "-c", "import clip_har; print(clip_har.__file__)"],
        cwd=tree / "deployments",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: clip_har imported from {out}")
    return out


@contextmanager
def serving(tree: Path, work: Path, store: Path, tag: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`bentoml serve` of `tree` on a copy of the model store, stopped whatever happens."""
    (work / "tmp").mkdir(parents=True)
    shutil.copytree(store / "models", work / "bentoml" / "models")
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", "127.0.0.1"]
    log = work / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", url.rsplit(":", 1)[1]],
            cwd=tree / "deployments",
            env=service_env(tree, work, tag),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole by PID
        )
        try:
            if not wait_http(f"{url}/readyz", 180, alive=lambda: proc.poll() is None):
                raise RuntimeError(f"the service did not start: {log.read_text()[-1500:]}")
            # warm: the first request's lazy loading is not what a hostile request costs
            post_file(f"{url}/predict", "images", "warm.png", png(64, 64))
            yield url, proc
        finally:
            stop(proc)


def run_case(case: Case, tree: Path, work: Path, store: Path, tag: str, runs: int) -> list[dict]:
    try:
        with serving(tree, work, store, tag) as (url, proc):
            service = ServiceTree(proc.pid)
            results = []
            for _ in range(runs):
                if proc.poll() is not None:
                    results.append({"status": None, "error": "the service had died"})
                    continue
                results.append(measure(service, proc, lambda: case.request(url)))
            return results
    except (RuntimeError, httpx.HTTPError) as exc:  # it did not start, or not even a small image worked
        return [{"status": None, "error": f"{type(exc).__name__}: {exc}"[:300]}]


def summary(runs: list[dict]) -> dict:
    def stat(key: str) -> dict[str, float] | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return {"median": statistics.median(values), "max": max(values)} if values else None

    keys = ("wall_s", "rss_before_mb", "rss_peak_mb", "rss_growth_mb", "hwm_sum_mb", "cpu_s", "written_mb")
    out = {"statuses": [r.get("status") for r in runs], **{k: stat(k) for k in keys}}
    if any("readyz_max_ms" in r for r in runs):
        out["readyz_max_ms"] = stat("readyz_max_ms")
    return out


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


@contextmanager
def base_worktree(commit: str, parent: Path) -> Iterator[Path]:
    path = parent / "hardening-base"
    git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def print_table(result: dict) -> None:
    def mm(s: dict | None, fmt: str = "{:g}") -> str:
        return "-" if s is None else f"{fmt.format(s['median'])}/{fmt.format(s['max'])}"

    head = ("case", "version", "status", "wall s", "rss0 MB", "peak MB", "growth MB", "cpu s", "write MB", "readyz")
    print(f"{head[0]:<20} {head[1]:<7} {head[2]:<13} " + " ".join(f"{h:>13}" for h in head[3:]))
    print(" " * 42 + "(median/max over runs)")
    for name, case in result["cases"].items():
        for version in ("before", "after"):
            s = case[version]["summary"]
            cells = [s[k] for k in ("wall_s", "rss_before_mb", "rss_peak_mb", "rss_growth_mb", "cpu_s", "written_mb")]
            cells.append(s.get("readyz_max_ms"))
            statuses = ",".join(str(x) for x in s["statuses"])
            print(f"{name:<20} {version:<7} {statuses:<13} " + " ".join(f"{mm(c):>13}" for c in cells))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--store", type=Path, default=ROOT / ".clip-har" / "bentoml", help="BentoML home to copy")
    args = ap.parse_args(argv)
    tag = f"clip-har:{(args.store / 'models' / 'clip-har' / 'latest').read_text().strip()}"
    started = time.perf_counter()
    result: dict = {
        "device": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "commits": {"before": git("rev-parse", BASE), "after": git("rev-parse", "HEAD")},
        # AFTER is the working tree as it was on disk: files changed since HEAD are listed
        "after_uncommitted": git("status", "--porcelain", "--untracked-files=no").splitlines(),
        "settings": {**LIMITS, "model": tag, "runs": args.runs, "timeout_s": TIMEOUT_S, "sample_s": SAMPLE_S},
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="hardening-") as tmp, base_worktree(BASE, Path(tmp)) as base:
        work = Path(tmp)
        cases = make_cases(work)
        chosen = set(filter(None, args.cases.split(","))) or {c.name for c in cases}
        trees = {"before": base, "after": ROOT}
        result["imported_from"] = {v: imported_from(t, service_env(t, work / "probe", tag)) for v, t in trees.items()}
        for case in (c for c in cases if c.name in chosen):
            result["cases"][case.name] = {"what": case.what}
            for version, tree in trees.items():
                runs = run_case(case, tree, work / f"{case.name}-{version}", args.store, tag, args.runs)
                result["cases"][case.name][version] = {"summary": summary(runs), "runs": runs}
                print(f"{case.name} {version}: {[r.get('status') for r in runs]}", flush=True)
    result["bench_s"] = round(time.perf_counter() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hardening.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return result


if __name__ == "__main__":
    main()
