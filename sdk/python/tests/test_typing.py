"""The installed package's type hints hold under mypy --strict (it ships py.typed)."""

from __future__ import annotations

import os
import subprocess
import sys

import hwsign


def test_installed_package_is_typed_strictly():
    package = os.path.dirname(hwsign.__file__)
    assert os.path.exists(os.path.join(package, "py.typed"))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "hwsign"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
