"""The installed package is found even from a folder that holds a directory named ``asuka``
(for example the folder above a clone called ``asuka``): the src/ layout makes the editable
install a plain path entry, which beats an empty namespace package."""

import subprocess
import sys


def test_a_folder_named_asuka_does_not_shadow_the_package(tmp_path):
    (tmp_path / "asuka" / "tests").mkdir(parents=True)  # what a clone's top level looks like
    out = subprocess.run([sys.executable, "-c", "import asuka; print(asuka.__file__); print(asuka.__version__)"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    path, version = out.stdout.split()
    assert path.endswith("__init__.py") and str(tmp_path) not in path and version
