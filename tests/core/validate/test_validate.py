"""arctic_inference_core._validate: the one set of argument checks of the core."""

from __future__ import annotations

import numpy as np
import pytest

from arctic_inference_core._validate import check_index, check_int, check_positive, is_int


def test_is_int_refuses_bool() -> None:
    assert is_int(3) and is_int(-1)
    assert not is_int(True) and not is_int(2.0) and not is_int("3") and not is_int(np.int64(3))


@pytest.mark.parametrize(
    "args, exc, message",
    [
        (("n", True, 1), TypeError, "n must be an int, got bool"),
        (("n", 2.0, 1), TypeError, "n must be an int, got float"),
        (("n", np.int32(2), 1), TypeError, "n must be an int, got int32"),
        (("n", 0, 1), ValueError, "n must be >= 1, got 0"),
        (("n", 9, None, 8), ValueError, "n must be <= 8, got 9"),
        (("n", 9, 1, 8), ValueError, r"n must be within \[1, 8\], got 9"),
    ],
)
def test_check_int_errors(args, exc, message) -> None:
    with pytest.raises(exc, match=message):
        check_int(*args)


def test_check_int_values() -> None:
    assert check_int("n", 5) == 5
    assert check_int("n", 1, 1, 1) == 1
    got = check_int("n", np.int64(7), 0, 8, types=(int, np.integer))
    assert got == 7 and type(got) is int
    with pytest.raises(TypeError, match="got bool"):
        check_int("n", np.bool_(True), types=(int, np.integer))


def test_check_index() -> None:
    assert check_index("x[0]", np.int16(3), 0) == 3
    with pytest.raises(TypeError, match=r"x\[0\] must be an int, got bool"):
        check_index("x[0]", False)
    with pytest.raises(TypeError, match=r"x\[1\] must be an int, got float"):
        check_index("x[1]", 1.0)
    with pytest.raises(ValueError, match=r"x\[2\] must be >= 0, got -1"):
        check_index("x[2]", -1, 0)


def test_check_positive() -> None:
    assert check_positive("--lr", 1e-3) == 1e-3
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--lr must be > 0"):
            check_positive("--lr", bad)
