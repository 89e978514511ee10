"""The BentoML service started for real (`bentoml serve` on a free loopback port) and called
over HTTP: every endpoint and every bad-input class gets a 4xx with a reason, never a 500."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from procs import stop_group

from clip_har.export.onnx_export import export_untrained

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
LIMITS = {
    "CLIP_HAR_MAX_FILES": "4",
    "CLIP_HAR_MAX_PIXELS": "250000",
    "CLIP_HAR_MAX_FILE_MB": "1",
    "CLIP_HAR_MAX_FRAMES": "20",
}
ADMIN = {"X-Admin-Token": "s3cret"}


def _png(w: int, h: int, noise: bool = False) -> bytes:
    arr = (
        np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8) if noise else np.zeros((h, w, 3), np.uint8)
    )
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Store:
    """A BentoML home whose model store holds two working models, one that cannot load and
    one whose input size and embedding differ from the others'."""

    home: Path
    tags: tuple[str, str]  # the service starts on the first; the switch test moves it to the second
    broken: str
    resized: str = ""  # 64-px input and 128-d embeddings where the others take 32 px and give 64


@dataclass(frozen=True)
class Server:
    url: str
    tags: tuple[str, str]
    broken: str
    log: Path  # its prediction log
    review: Path  # its review queue
    proc: subprocess.Popen

    def stop(self) -> None:
        _stop(self.proc)


def _save_to_store(onnx_dir: Path, lineage: dict[str, str], env: dict[str, str], **extra: Path) -> str:
    """save_to_store in a process of its own (BentoML reads BENTOML_HOME at import); `extra`:
    its model_dir= and eval_report= paths."""
    args = ", ".join([f"Path({str(onnx_dir)!r})", repr(lineage), *(f"{k}=Path({str(v)!r})" for k, v in extra.items())])
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, '.');"
        f"from deployments.bento_pack import save_to_store; print(save_to_store({args}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Built once per module; servers serve copies of it, so nothing a test does reaches it."""
    tmp = tmp_path_factory.mktemp("store")
    home = tmp / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    # two models in the store: the service starts on the first, switches to the second; the third
    # is the demo architecture, whose pixels the others cannot take
    tags = []
    for seed, overrides in ((0, ()), (1, ()), (2, ("model.preset=demo",))):
        onnx = export_untrained(tmp / f"onnx{seed}", seed, overrides=overrides)
        tags.append(_save_to_store(onnx, {"data_version": f"tiny-v{seed + 1}", "mlflow_run_id": f"r{seed}"}, env))
    broken = tmp / "onnx-broken"  # a model in the store whose graph does not load
    shutil.copytree(tmp / "onnx1", broken)
    (broken / "image.onnx").write_bytes(b"not an onnx graph")
    return Store(home, (tags[0], tags[1]), _save_to_store(broken, {"data_version": "broken"}, env), tags[2])


@contextmanager
def running_server(
    store: Store, root: Path, port: int, token: str = ADMIN["X-Admin-Token"], env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`bentoml serve` on the store's first model on 127.0.0.1:`port` (settings in `env` on top),
    with its own prediction log, review queue and copy of the store: BentoML empties
    $BENTOML_HOME/prometheus_multiproc_dir when it starts, so two servers at once must not share a home."""
    home = root / "bentoml"
    shutil.copytree(store.home, home)
    extra, env = env or {}, {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **LIMITS}
    env["CLIP_HAR_PREDICTION_LOG"] = str(root / "predictions")
    env["CLIP_HAR_REVIEW_DIR"] = str(root / "review")
    env["CLIP_HAR_MODEL"] = store.tags[0]
    env["CLIP_HAR_ADMIN_TOKEN"] = token
    env.update(extra)
    log_path = root / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "service:ClipHar", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT / "deployments",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so we stop the whole tree by PID
        )
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(log_path.read_text()[-3000:])
                time.sleep(0.5)
            else:
                raise RuntimeError("service did not become ready: " + log_path.read_text()[-3000:])
            yield Server(url, store.tags, store.broken, root / "predictions", root / "review", proc)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc)  # graceful: BentoML runs on_shutdown hooks


@pytest.fixture(scope="module")
def server(store: Store, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]) -> Iterator[str]:
    """One server shared by the module's read-only tests: none switches its model or stops it."""
    with running_server(store, tmp_path_factory.mktemp("serve"), free_port()) as srv:
        yield srv.url


@pytest.fixture
def own_server(store: Store, tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Server]:
    """A server of the test's own, for a test that switches its model or stops it."""
    with running_server(store, tmp_path, free_port()) as srv:
        yield srv


@pytest.fixture(scope="module")
def jpgs(tiny_data_master: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tiny_data_master / "images").rglob("*.jpg"))[:6]]


def _post(url: str, files: list, data: dict | None = None) -> httpx.Response:
    return httpx.post(url, files=files, data=data or {}, timeout=60)


def test_predict(server: str, jpgs: list[bytes]) -> None:
    r = _post(f"{server}/predict", [("images", ("a.jpg", jpgs[0])), ("images", ("b.jpg", jpgs[1]))], {"top_k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"].startswith("clip-har:")
    assert [x["filename"] for x in body["results"]] == ["a.jpg", "b.jpg"]
    first = body["results"][0]
    assert len(first["top_k"]) == 3 and first["label"] == first["top_k"][0]["label"]


def test_concurrent_callers_are_served(server: str, jpgs: list[bytes]) -> None:
    def one(i: int) -> int:
        return _post(f"{server}/predict", [("images", (f"{i}.jpg", jpgs[i % len(jpgs)]))]).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(16)))
    assert codes == [200] * 16


def test_classify_free_text(server: str, jpgs: list[bytes]) -> None:
    for labels in ('["a cat", "someone running"]', "a cat, someone running"):
        r = _post(f"{server}/classify", [("images", ("a.jpg", jpgs[0]))], {"labels": labels})
        assert r.status_code == 200, r.text
        scores = r.json()["results"][0]["scores"]
        assert set(scores) == {"a cat", "someone running"} and abs(sum(scores.values()) - 1) < 1e-4


def test_predict_video(server: str, tiny_data_master: Path, tmp_path: Path, write_video: Callable[..., Path]) -> None:
    frames = [Image.open(p).convert("RGB") for p in sorted((tiny_data_master / "images").rglob("*.jpg"))[:6]]
    video = write_video(tmp_path / "v.mp4", frames, fps=2)
    r = httpx.post(
        f"{server}/predict_video", files=[("video", ("v.mp4", video.read_bytes()))], data={"fps": "1"}, timeout=60
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert 2 <= len(body["frames"]) <= 4 and body["segments"]
    seg = body["segments"][0]
    assert set(seg) == {"start_s", "end_s", "label", "score"} and seg["end_s"] > seg["start_s"]


def test_model_info_and_builtin_endpoints(server: str) -> None:
    r = httpx.get(f"{server}/model", timeout=10)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["labels"][0] == "calling" and info["lineage"]["data_version"] == "tiny-v1"
    assert "onnx_sha256" in info["lineage"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server}{path}", timeout=10).status_code == 200


BAD = {
    "corrupt": ([("images", ("x.jpg", b"\xff\xd8\xff\xe0garbage"))], {}, "decode"),
    "truncated": ([("images", ("x.png", _png(64, 64, noise=True)[:300]))], {}, "decode"),
    "empty file": ([("images", ("x.jpg", b""))], {}, "empty"),
    "not an image": ([("images", ("x.txt", b"hello, world"))], {}, "decode"),
    "decompression bomb": ([("images", ("big.png", _png(600, 600)))], {}, "limit"),
    "oversized upload": ([("images", ("big.png", _png(700, 700, noise=True)))], {}, "MB"),
    "too many files": ([("images", (f"{i}.png", _png(8, 8))) for i in range(5)], {}, "too many"),
    "missing field": ([], {"top_k": "1"}, "images"),
    "bad top_k": ([("images", ("x.png", _png(32, 32)))], {"top_k": "0"}, "top_k"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_predict_input_is_a_4xx_with_reason(server: str, case: str, jpgs: list[bytes]) -> None:
    files, data, needle = BAD[case]
    r = _post(f"{server}/predict", files, data)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert needle.lower() in r.text.lower(), r.text
    ok = _post(f"{server}/predict", [("images", ("a.jpg", jpgs[0]))])
    assert ok.status_code == 200  # still serving


def test_bad_classify_and_video_inputs(server: str, jpgs: list[bytes]) -> None:
    img = [("images", ("a.jpg", jpgs[0]))]
    for data in ({"labels": ""}, {"labels": "[]"}, {"labels": " , "}, {}):
        r = _post(f"{server}/classify", img, data)
        assert 400 <= r.status_code < 500 and "labels" in r.text, (data, r.text)
    for payload, needle in ((b"", "video"), (b"not a video at all", "video")):
        r = httpx.post(f"{server}/predict_video", files=[("video", ("v.mp4", payload))], timeout=60)
        assert 400 <= r.status_code < 500 and needle in r.text.lower(), r.text
    r = httpx.post(f"{server}/predict_video", files=[("video", ("v.mp4", b"x" * 10))], data={"fps": "0"}, timeout=60)
    assert 400 <= r.status_code < 500
    assert json.loads(httpx.get(f"{server}/model", timeout=10).text)["labels"]


def test_switch_model_under_load_fails_no_request(own_server: Server, jpgs: list[bytes]) -> None:
    """POST /admin/reload while callers keep sending: every request answers 200, each with the
    version that computed it, and everything after the switch comes from the new model."""
    server = own_server.url
    old, new = own_server.tags
    reload = f"{server}/admin/reload"
    assert httpx.post(reload, json={"model": new}, timeout=60).status_code == 403  # no token
    bad = httpx.post(reload, json={"model": "clip-har:nope"}, headers=ADMIN, timeout=60)
    assert bad.status_code == 404 and "not in the BentoML model store" in bad.text
    bad = httpx.post(reload, json={"model": own_server.broken}, headers=ADMIN, timeout=60)
    assert bad.status_code == 400 and "cannot be served" in bad.text
    assert httpx.get(f"{server}/model", timeout=10).json()["model_version"] == old  # nothing moved
    stop, answers = threading.Event(), []

    def caller(i: int) -> None:
        while not stop.is_set() and len(answers) < 3000:  # bounded in count and (below) in time
            sent = time.monotonic()
            r = _post(f"{server}/predict", [("images", (f"{i}.jpg", jpgs[i % len(jpgs)]))])
            answers.append((sent, r.status_code, r.json().get("model_version")))

    with ThreadPoolExecutor(4) as pool:
        for i in range(4):
            pool.submit(caller, i)
        deadline = time.monotonic() + 120
        while len(answers) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.post(reload, json={"model": new}, headers=ADMIN, timeout=120)
        switched = time.monotonic()
        while sum(t > switched for t, _, _ in answers) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
    assert r.status_code == 200, r.text
    assert r.json() == {"model_version": new, "previous": old}
    assert [code for _, code, _ in answers] == [200] * len(answers)
    assert {v for _, _, v in answers} == {old, new}
    # a request sent after the switch returned can only be answered by the new model (by send
    # time, not by place in the list: a thread may append an earlier answer late on a busy machine)
    after = [v for t, _, v in answers if t > switched]
    assert len(after) >= 20 and set(after) == {new}
    info = httpx.get(f"{server}/model", timeout=10).json()
    assert info["model_version"] == new and info["lineage"]["data_version"] == "tiny-v2"


def test_switch_across_input_sizes_converges_every_http_worker(
    store: Store,
    tmp_path: Path,
    free_port: Callable[[], int],
    jpgs: list[bytes],
    tiny_data_master: Path,
    write_video: Callable[..., Path],
) -> None:
    """Two HTTP workers; a reload reaches one of them. Switching to a model that takes other
    pixels (64 px and 128-d embeddings where the first takes 32 px and gives 64) while callers
    keep sending to /predict, /classify and /predict_video fails no request, and afterwards every
    answer comes from the new model, the worker that never saw the reload included. Two reloads
    at once are serialised: they end on one model, which every worker then serves."""
    old, new = store.tags[0], store.resized
    frames = [Image.open(p).convert("RGB") for p in sorted((tiny_data_master / "images").rglob("*.jpg"))[:4]]
    video = write_video(tmp_path / "v.mp4", frames, fps=2).read_bytes()

    def call(kind: str, i: int) -> tuple[int, str | None]:
        image = [("images", (f"{i}.jpg", jpgs[i % len(jpgs)]))]
        if kind == "predict":
            r = _post(f"{url}/predict", image)
        elif kind == "classify":
            r = _post(f"{url}/classify", image, {"labels": "a cat, someone running"})
        else:
            r = _post(f"{url}/predict_video", [("video", ("v.mp4", video))], {"fps": "1"})
        return r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text

    with running_server(store, tmp_path / "srv", free_port(), env={"CLIP_HAR_HTTP_WORKERS": "2"}) as srv:
        url, reload = srv.url, f"{srv.url}/admin/reload"
        stop, answers = threading.Event(), []

        def caller(kind: str, i: int) -> None:
            while not stop.is_set() and len(answers) < 3000:  # bounded in count and (below) in time
                sent = time.monotonic()
                answers.append((sent, *call(kind, i)))

        kinds = ("predict", "predict", "classify", "video")
        with ThreadPoolExecutor(len(kinds)) as pool:
            callers = [pool.submit(caller, kind, i) for i, kind in enumerate(kinds)]
            try:
                deadline = time.monotonic() + 180
                while len(answers) < 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                r = httpx.post(reload, json={"model": new}, headers=ADMIN, timeout=120)
                switched = time.monotonic()
                while sum(t > switched for t, _, _ in answers) < 40 and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
        [c.result() for c in callers]  # a caller's exception fails the test
        assert r.status_code == 200, r.text
        assert r.json() == {"model_version": new, "previous": old}
        assert [a for a in answers if a[1] != 200] == []
        assert {v for _, _, v in answers} == {old, new}
        # every request sent after the reload returned is answered by the new model
        after = [v for t, _, v in answers if t > switched]
        assert len(after) >= 40 and set(after) == {new}
        # a fresh connection each: both workers answer, each from the model being served
        assert {call(kind, i) for i in range(8) for kind in ("predict", "classify")} == {(200, new)}
        # the HTTP worker the reload did not reach answered too (BentoML's request log names the worker)
        log = (tmp_path / "srv" / "serve.log").read_text()
        after = log[log.index("path=/admin/reload") :]
        answered_by = re.findall(r"\[entry_service:clip-har:(\d+)\][^\n]*path=/predict[^\n]*status=200", after)
        assert set(answered_by) == {"1", "2"}

        with ThreadPoolExecutor(2) as pool:
            done = list(
                pool.map(lambda tag: httpx.post(reload, json={"model": tag}, headers=ADMIN, timeout=120), store.tags)
            )
        assert [d.status_code for d in done] == [200, 200], [d.text for d in done]
        a, b = (d.json() for d in done)
        first, last = (a, b) if b["previous"] == a["model_version"] else (b, a)
        assert first["previous"] == new and last["previous"] == first["model_version"]  # one after the other
        served = httpx.get(f"{url}/model", timeout=10).json()["model_version"]
        assert served == last["model_version"]
        assert {call(kind, i) for i in range(8) for kind in ("predict", "classify", "video")} == {(200, served)}


def test_graceful_stop_loses_no_logged_prediction(own_server: Server, jpgs: list[bytes]) -> None:
    """Concurrent predictions from both models, then SIGTERM at once: every image answered 200 is
    in the prediction log, and (untrained models being unsure of everything) in the review queue."""
    from clip_har.monitoring.predlog import embeddings_matrix, read_log
    from clip_har.monitoring.review import ReviewQueue

    old, new = own_server.tags

    def send(i: int) -> int:
        files = [("images", (f"{i}-{k}.jpg", jpgs[(i + k) % len(jpgs)])) for k in range(2)]
        r = _post(f"{own_server.url}/predict", files)
        assert r.status_code == 200, r.text
        return len(r.json()["results"])

    with ThreadPoolExecutor(4) as pool:
        answered = sum(pool.map(send, range(8)))  # on the first model
        r = httpx.post(f"{own_server.url}/admin/reload", json={"model": new}, headers=ADMIN, timeout=120)
        assert r.status_code == 200 and r.json()["previous"] == old, r.text
        answered += sum(pool.map(send, range(8, 14)))  # on the second
    assert answered == 28
    own_server.stop()
    df, skipped = read_log(own_server.log)
    assert skipped == [] and len(df) == answered
    assert embeddings_matrix(df).shape == (len(df), 64)
    assert df["brightness"].between(0, 255).all() and set(df["model_version"]) == {old, new}
    assert len(ReviewQueue(own_server.review).items()) == answered


def test_admin_reload_refuses_malformed_tags_and_non_json_bodies(server: str) -> None:
    """A malformed tag is a 400 with the reason (not a 500); a body that is not JSON, such as a
    cross-site `text/plain` POST a browser sends without a preflight, is refused even with the
    token; nothing moves."""
    reload, before = f"{server}/admin/reload", httpx.get(f"{server}/model", timeout=10).json()["model_version"]
    for tag in ("::", "a b", "../x"):
        r = httpx.post(reload, json={"model": tag}, headers=ADMIN, timeout=60)
        assert r.status_code == 400 and "not a valid" in r.text, (tag, r.status_code, r.text)
    body = json.dumps({"model": before})
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        r = httpx.post(reload, content=body, headers={**ADMIN, "Content-Type": content_type}, timeout=60)
        assert r.status_code == 415 and "application/json" in r.text, (content_type, r.status_code, r.text)
    wrong = httpx.post(reload, json={"model": before}, headers={"X-Admin-Token": "s3creT"}, timeout=60)
    assert wrong.status_code == 403
    assert httpx.get(f"{server}/model", timeout=10).json()["model_version"] == before


def test_oversized_bodies_and_too_many_parts_are_refused_before_reading(server: str, jpgs: list[bytes]) -> None:
    """Refused with a reason before the body is read: by Content-Length, by counting a chunked
    body, by counting parts (the limits: 4 files of 1 MB here, so /predict takes at most 5 MB)."""
    big = [("images", ("a.jpg", b"\0" * 6_000_000))]
    r = httpx.post(f"{server}/predict", files=big, timeout=60)
    assert r.status_code == 413 and "over the limit" in r.json()["error"], r.text

    def chunks():  # no Content-Length: the server must count
        yield b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
        for _ in range(7):
            yield b"\0" * 1_000_000

    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    r = httpx.post(f"{server}/predict", content=chunks(), headers=headers, timeout=60)
    assert r.status_code == 413 and "over the limit" in r.json()["error"], r.text
    # too many parts: the first limit met while the body streams refuses it (the part count, or
    # the form reader's file count), before the rest is read
    many = [("images", (f"{i}.jpg", jpgs[0])) for i in range(80)]
    r = httpx.post(f"{server}/predict", files=many, timeout=60)
    error = r.json()["error"].lower()
    assert r.status_code in (400, 413) and ("parts" in error or "too many files" in error), r.text
    assert httpx.post(f"{server}/predict", files=[("images", ("a.jpg", jpgs[0]))], timeout=60).status_code == 200


def test_without_a_token_only_this_machine_may_reload(
    store: Store, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """A page whose DNS name was rebound to 127.0.0.1 reaches the loopback service with its own
    Host header: refused. A local caller gets through (here to a 404: no such model)."""
    with running_server(store, tmp_path, free_port(), token="") as srv:
        reload = f"{srv.url}/admin/reload"
        rebound = httpx.post(reload, json={"model": store.tags[1]}, headers={"Host": "evil.example"}, timeout=60)
        assert rebound.status_code == 403, rebound.text  # BentoML words every 403 as "Authorization error"
        local = httpx.post(reload, json={"model": "clip-har:nope"}, timeout=60)
        assert local.status_code == 404 and "not in the BentoML model store" in local.text
        assert httpx.get(f"{srv.url}/model", timeout=10).json()["model_version"] == store.tags[0]


# --- POST /explain and the API's own page -------------------------------------------------------


@pytest.fixture(scope="module")
def explain_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A model store whose model (the demo architecture, untrained) carries its PyTorch weights."""
    tmp = tmp_path_factory.mktemp("explain-store")
    home = tmp / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    onnx = export_untrained(tmp / "onnx", 3, overrides=("model.preset=demo",))
    weights = onnx.with_name(onnx.name + "-torch")  # export_untrained's PyTorch artifact
    tag = _save_to_store(onnx, {"data_version": "demo-v1"}, env, model_dir=weights)
    return Store(home, (tag, tag), "")


@pytest.fixture(scope="module")
def explain_server(
    explain_store: Store, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[str]:
    with running_server(explain_store, tmp_path_factory.mktemp("explain"), free_port()) as srv:
        yield srv.url


def test_explain(explain_server: str, jpgs: list[bytes]) -> None:
    """A heat grid and an overlay PNG for the predicted label, or for a chosen one; callers at
    once are all answered (explanations have slots of their own, and a queue)."""
    import base64

    r = _post(f"{explain_server}/explain", [("image", ("a.jpg", jpgs[0]))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"].startswith("clip-har:") and body["filename"] == "a.jpg"
    assert body["label"] == body["predicted"] and 0 < body["score"] <= 1 and body["method"] == "layer-cam:layer2"
    grid = np.asarray(body["grid"])
    assert grid.shape == (8, 8) and grid.min() >= 0 and grid.max() == pytest.approx(1, abs=1e-3)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == Image.open(io.BytesIO(jpgs[0])).size
    chosen = _post(f"{explain_server}/explain", [("image", ("a.jpg", jpgs[0]))], {"label": "texting"}).json()
    assert chosen["label"] == "texting" and chosen["predicted"] == body["predicted"]

    def one(i: int) -> int:
        return _post(f"{explain_server}/explain", [("image", (f"{i}.jpg", jpgs[i % len(jpgs)]))]).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(12))) == [200] * 12


EXPLAIN_BAD = {
    "unknown label": ([("image", ("a.png", _png(32, 32)))], {"label": "juggling"}, 400, "unknown label"),
    "empty file": ([("image", ("a.png", b""))], {}, 400, "0 bytes"),
    "not an image": ([("image", ("a.txt", b"hello, world"))], {}, 400, "decode"),
    "decompression bomb": ([("image", ("big.png", _png(600, 600)))], {}, 400, "limit"),
    "two images": ([("image", ("a.png", _png(8, 8)))] * 2, {}, 400, "one file"),
    "images, not image": ([("images", ("a.png", _png(8, 8)))], {}, 400, "unknown field 'images'"),
    "over the body limit": ([("image", ("a.png", b"\0" * 2_500_000))], {}, 413, "over the limit"),
}


@pytest.mark.parametrize("case", sorted(EXPLAIN_BAD))
def test_bad_explain_input_is_a_4xx_with_reason(explain_server: str, case: str) -> None:
    files, data, status, needle = EXPLAIN_BAD[case]
    r = _post(f"{explain_server}/explain", files, data)
    assert r.status_code == status and needle in r.json()["error"], (r.status_code, r.text)


def test_explain_without_pytorch_weights_is_a_409(server: str, jpgs: list[bytes]) -> None:
    r = _post(f"{server}/explain", [("image", ("a.jpg", jpgs[0]))])
    assert r.status_code == 409 and "without PyTorch weights" in r.json()["error"], r.text


def test_the_api_page_is_ours_and_loads_nothing_from_elsewhere(server: str) -> None:
    """GET / is the Swagger UI over our description (deployments/API.md and the limits in force),
    titled clip-har with our version, and neither the page nor the document names another host."""
    import re
    from importlib.metadata import version

    page = httpx.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>clip-har API</title>" in page.text and "./docs.json" in page.text
    assert re.findall(r"https?://", page.text) == []  # no tag manager, no GitHub corner, no validator
    for asset in re.findall(r'(?:src|href)="\./([^"]+)"', page.text):
        assert httpx.get(f"{server}/{asset}", timeout=10).status_code == 200, asset
    docs = httpx.get(f"{server}/docs.json", timeout=10)
    info = docs.json()["info"]
    assert info["title"] == "clip-har" and info["version"] == version("clip-har")
    description = info["description"]
    assert description.startswith((ROOT / "deployments" / "API.md").read_text()[:200])
    assert "### POST /explain" in description and "| `CLIP_HAR_MAX_FILES` | 4 |" in description
    placeholder = ("clip-har:dev", "This is a Machine Learning Service", "Slack", "Twitter", "BentoML Team")
    assert not [p for p in placeholder if p in json.dumps(info)] and "contact" not in info
    hosts = set(re.findall(r"https?://([^/:\s\"'`)]+)", docs.text))
    assert hosts <= {"localhost", "127.0.0.1"}, hosts
    label = docs.json()["paths"]["/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert label["schema"]["properties"]["label"]["enum"][:2] == ["", "calling"]
