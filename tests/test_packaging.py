"""Packaging: the wheel's file list, the console script, and the library/CLI boundary."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("stackgan2-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_maps_cli_and_assets_into_the_package(wheel_files):
    names = set(wheel_files)
    for required in (
        "stackgan2/__init__.py",
        "stackgan2/models/blocks.py",
        "stackgan2/cli/main.py",
        "stackgan2/cli/__main__.py",
        "stackgan2/cli/serve_page.html",
        "stackgan2/assets/__init__.py",
        "stackgan2/assets/classifier-toy-birds/config.json",
        "stackgan2/assets/classifier-toy-birds/classifier.safetensors",
        "stackgan2/presets/tiny.toml",
        "stackgan2/presets/birds.toml",
        "stackgan2/training/trainer.py",
    ):
        assert required in names, required
    tops = {n.split("/")[0] for n in names}
    assert tops == {"stackgan2", next(t for t in tops if t.endswith(".dist-info"))}, tops  # no bare `cli`
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert entry_points


def test_every_library_package_is_in_the_wheel(wheel_files):
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "stackgan2").rglob("__init__.py")}
    for package in packages:
        assert f"{package}/__init__.py" in wheel_files, f"{package} missing from pyproject packages list"


def test_library_never_imports_typer_rich_or_a_web_framework():
    for path in (ROOT / "stackgan2").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"typer", "rich", "fastapi", "starlette", "uvicorn"}, f"{path} imports {name}"


def test_console_script_help_and_version():
    result = subprocess.run([sys.executable, "-m", "stackgan2.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout
    result = subprocess.run([sys.executable, "-m", "stackgan2.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "stackgan2" in result.stdout


def test_help_does_not_import_torch():
    code = "import sys; from stackgan2.cli.main import app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
