"""The wheel ships the bundled NiNo weights, and an installed copy loads them with no network and no checkout."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("config.json", "model.safetensors", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{build.stderr[-2000:]}")
    (path,) = out.glob("nino_optim-*.whl")
    return path


def test_wheel_holds_the_bundled_weights(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for name in BUNDLED:
        assert f"nino_optim/pretrained/{name}" in names
    assert not [n for n in names if n.endswith(".pt")], "no checkpoint files ship in the wheel"


def test_installed_wheel_loads_the_default_offline(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip would install, without the checkout on the path
    code = ("import nino_optim, torch; from nino_optim import load_nowcaster\n"
            "m = load_nowcaster('default')\n"
            "assert type(m).__name__ == 'NiNoGNN' and sum(p.numel() for p in m.parameters()) > 100000\n"
            "print(nino_optim.__file__)")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().startswith(str(site))
