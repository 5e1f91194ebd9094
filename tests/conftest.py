import numpy as np
import pytest

from lutlm import _C


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _restore_kernel_settings():
    """Tests may switch ISA or thread count; put the defaults back afterwards."""
    threads = _C.get_num_threads()
    yield
    _C.set_isa("auto")
    _C.set_num_threads(threads)


ISAS = _C.cpu_info()["available_isas"]
