"""clip_har/ is the library: it never imports prefect or bentoml."""

import pkgutil
import subprocess
import sys

import clip_har


def test_library_imports_neither_prefect_nor_bentoml() -> None:
    modules = [m.name for m in pkgutil.walk_packages(clip_har.__path__, "clip_har.")]
    assert len(modules) > 15
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('prefect', 'bentoml'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"clip_har pulled in: {out.stdout.strip()}"
