"""The wheel ships the bundled NiNo weights, and an installed copy loads them with no network and no checkout."""
import ast
import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("config.json", "model.safetensors", "README.md")


def build_wheel(tmp: Path) -> Path:
    """A wheel built from a copy of the source tree (building in the checkout would leave build/ there, whose
    stale files a later build could pick up)."""
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", "data", ".gpu", "docs", "site"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "wheel"), str(source)], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{build.stderr[-2000:]}")
    (path,) = (tmp / "wheel").glob("nino_optim-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


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


def test_wheel_version_is_the_package_version(wheel):
    import nino_optim

    assert wheel.name.startswith(f"nino_optim-{nino_optim.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        assert f"\nVersion: {nino_optim.__version__}\n" in zf.read(meta).decode()


# The tooling's own dependencies (the `bench` extra) and the integrations' packages: the library needs none of them.
# (tqdm is not among them: huggingface_hub, a dependency of the library, imports it.)
TOOLING_ONLY = ("matplotlib", "sklearn", "transformers", "accelerate", "lightning", "triton")


def test_the_library_imports_no_tooling():
    """``import nino_optim`` and every library module import neither the tooling (bench, metatrain, cli) nor the
    tooling's dependencies: here they are made unimportable, in a fresh interpreter."""
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TOOLING_ONLY!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked", name=name)
sys.meta_path.insert(0, Block())
import nino_optim
tooling = ("nino_optim.bench", "nino_optim.metatrain", "nino_optim.cli", "nino_optim.__main__",
           "nino_optim.nowcast.fused")  # fused: the Triton kernel, imported only for set_scatter_backend("triton")
def walk(package):  # pkgutil.walk_packages would import the tooling packages to look inside them
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if not info.name.startswith(tooling):
            module = importlib.import_module(info.name)
            if info.ispkg:
                walk(module)
walk(nino_optim)
print([m for m in sys.modules if m.startswith(("nino_optim.bench", "nino_optim.metatrain")) or m == "nino_optim.cli"])
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_the_tooling_imports_its_extras_lazily():
    """The CLI and the tooling's modules import without the `bench` extra; only the commands that draw or show
    progress need it."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("matplotlib", "sklearn"):
            raise ModuleNotFoundError(f"{{name}} is blocked", name=name)
sys.meta_path.insert(0, Block())
import nino_optim.cli, nino_optim.bench, nino_optim.bench.report, nino_optim.bench.runner, nino_optim.metatrain
import nino_optim.metatrain.collect, nino_optim.metatrain.train, nino_optim.metatrain.stacked
try:
    nino_optim.cli.main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


README_LOOP_HEADING = "## A complete training loop"
# Packages the README's loop may import besides torch and nino-optim (and its dependencies): module -> distribution.
SNIPPET_PACKAGES = {"sklearn": "scikit-learn"}


def readme_loop(text: str) -> str:
    """The first ```python block after the heading line ``## A complete training loop``."""
    lines = text.splitlines()
    start = lines.index(README_LOOP_HEADING)
    begin = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```python")
    end = next(i for i in range(begin + 1, len(lines)) if lines[i].strip() == "```")
    return "\n".join(lines[begin + 1:end]) + "\n"


@pytest.mark.slow
def test_readme_training_loop_runs_from_the_wheel_in_a_fresh_venv(tmp_path):
    """Build the wheel, install it with torch into a new virtual environment and run the README's training loop
    there, on the CPU, in under a minute, without the checkout and without a network for the loop itself."""
    loop = readme_loop((ROOT / "README.md").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(loop)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(loop))
                 if isinstance(node, ast.ImportFrom) and node.module}
    extra = sorted(SNIPPET_PACKAGES[m] for m in imported if m in SNIPPET_PACKAGES)

    wheel = build_wheel(tmp_path)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def pip(*args):
        run = subprocess.run([str(python), "-m", "pip", "install", "-q", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, f"pip install {' '.join(args)}:\n{run.stderr[-2000:]}"

    pip("torch==2.13.0")  # first and pinned: the CPU wheel, not a multi-GB CUDA build
    pip(str(wheel), *extra)

    (tmp_path / "loop.py").write_text(
        "import nino_optim\nprint('nino_optim', nino_optim.__version__, nino_optim.__file__)\n" + loop)
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", CUDA_VISIBLE_DEVICES="")
    started = time.perf_counter()
    run = subprocess.run([str(python), "loop.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    took = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-3000:]
    import nino_optim

    _, version, location = run.stdout.splitlines()[0].split(" ", 2)
    assert version == nino_optim.__version__ and location.startswith(str(env_dir))  # the wheel, not the checkout
    assert took < 60, f"the README's loop took {took:.0f} s"
