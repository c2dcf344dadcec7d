"""``training/wheel_data.py``: a wheel is read only when it is the file the reports were measured on."""

from __future__ import annotations

import hashlib

import pytest

from MultiModalSegLib.errors import InputError
from Testing.conftest import load_script


def test_check_wheel_accepts_the_file_and_refuses_another_or_none(tmp_path):
    script = load_script("training/wheel_data.py")
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    wheel.write_bytes(b"the measured wheel")
    sha = hashlib.sha256(b"the measured wheel").hexdigest()
    script.check_wheel(wheel, sha, "x==1.0")
    wheel.write_bytes(b"the measured wheel, altered")
    with pytest.raises(InputError, match=r"x-1.0-py3-none-any.whl: sha256 .* is not that of the x==1.0 wheel") as error:
        script.check_wheel(wheel, sha, "x==1.0")
    assert "`pip download --no-deps x==1.0`" in str(error.value)
    with pytest.raises(InputError, match="missing.whl: no such file; fetch it with `pip download --no-deps x==1.0`"):
        script.check_wheel(tmp_path / "missing.whl", sha, "x==1.0")
