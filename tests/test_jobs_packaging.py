"""Cell packaging: free-name analysis, input choice, setup pinning, cloudpickle.zip."""
from __future__ import annotations

import io
import zipfile

import pytest

from xt_magic.core.errors import JobError
from xt_magic.core.jobs import packaging

CELL = """
import numpy as np
y = x + 1
def f(a, b=dflt):
    return a * scale + g(a)
class C(Base):
    k = konst
z = [i * w for i in range(3)]
h = lambda q: q + lam
print(y, f(2), lr)
lr = 3
"""


def test_free_names():
    names = packaging.free_names(CELL)
    assert set(names) == {"x", "dflt", "Base", "range", "print", "lr", "konst", "g", "lam",
                          "scale", "w"}
    assert names[0] == "x"
    for bound in ("np", "y", "f", "C", "z", "h", "i", "a", "q"):
        assert bound not in names


def test_names_read_by_their_own_assignment_are_inputs():
    assert packaging.free_names("total = total + 1\ncount += 1\nfresh = 2\nfresh2: int = fresh\n"
                                "a, b = b, a\n") == ["total", "count", "b", "a"]


def test_choose_inputs_skips_builtins_private_and_hparams():
    ns = {"x": 1, "print": print, "_": 5, "In": [], "lr": 0.1, "scale": 2, "w": 3, "other": 9}
    got = packaging.choose_inputs(CELL, ns, None, exclude={"w"})
    assert sorted(got) == ["lr", "scale", "x"]
    assert packaging.choose_inputs(CELL, ns, ["other"]) == {"other": 9}


def test_setup_pinning():
    setup = packaging.resolve_setup("s", {"pip-packages": ["cloudpickle==*", "requests>=2"],
                                          "activate": None})
    import cloudpickle
    assert setup["pip-packages"] == [f"cloudpickle=={cloudpickle.__version__}", "requests>=2"]
    assert len(setup["hash"]) == 64
    same = packaging.resolve_setup("s", {"pip-packages": ["cloudpickle==*", "requests>=2"]})
    assert same["hash"] == setup["hash"]
    with pytest.raises(JobError, match="not installed here"):
        packaging.resolve_setup("s", {"pip-packages": ["no-such-package-xyz==*"]})
    assert packaging.resolve_setup("s", None) is None


def test_cloudpickle_zip_is_importable(tmp_path):
    data = packaging.cloudpickle_zip()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "cloudpickle/__init__.py" in names and "cloudpickle/cloudpickle.py" in names
    path = tmp_path / "cp.zip"
    path.write_bytes(data)
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-S", "-c",
                          f"import sys; sys.path.insert(0, {str(path)!r}); import cloudpickle;"
                          "print(cloudpickle.__file__)"], capture_output=True, text=True)
    assert str(path) in out.stdout, out.stderr
