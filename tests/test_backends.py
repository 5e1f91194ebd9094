"""The backend contract (lutlm.backends.base.Backend): every backend implements exactly its
ops, with the same signatures, so the one layer loop (model/decoder.py) runs on any."""

import inspect

import numpy as np
import pytest

from lutlm.backends.base import Backend, PagedKVCache
from lutlm.backends.cpu import CpuBackend, KVCache
from lutlm.model import ForwardBatch

from .tiny_model import tiny_decoder
from .triton_assets import require_triton


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def check_implements_the_contract(cls: type) -> None:
    assert issubclass(cls, Backend) and not inspect.isabstract(cls), cls.__abstractmethods__
    contract, ops = public_methods(Backend), public_methods(cls)
    assert ops.keys() == contract.keys(), "a backend has the contract's ops, no others"
    for name, sig in ops.items():
        # Same parameter names, kinds and defaults: the loop calls every backend alike.
        want = [(p.name, p.kind, p.default) for p in contract[name].parameters.values()]
        got = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
        assert got == want, f"{cls.__name__}.{name}{sig} differs from Backend.{name}"
    assert issubclass(cls.cache_type, PagedKVCache)
    for name in ("rms_norm", "add_rms_norm", "gated_act"):  # what the base class calls
        assert callable(getattr(cls.kernels, name)), name


def test_cpu_backend_implements_the_contract():
    check_implements_the_contract(CpuBackend)


def test_gpu_backend_implements_the_contract():
    require_triton()
    from lutlm.backends.gpu import GpuBackend

    check_implements_the_contract(GpuBackend)


def test_cpu_cache_and_wrong_cache_type():
    model = tiny_decoder(0)
    cache = model.new_cache(3, 16)
    assert isinstance(cache, KVCache) and cache.k[0].dtype == np.float16
    assert cache.k[1].shape == (3, 16, model.config.num_kv_heads, model.config.head_dim)
    cache.k[1][0] = 1.5
    cache.copy_block(0, 2)
    assert (cache.k[1][2] == 1.5).all()

    class Other(PagedKVCache):
        def _zeros(self, shape):
            return np.zeros(shape, np.float16)

    with pytest.raises(TypeError, match="new_cache"):
        model.forward(ForwardBatch.single([1, 2], 0, [0], 16), Other(model.config, 3, 16))


def test_placing_on_the_cpu_keeps_the_loaded_arrays():
    model = tiny_decoder(0)
    again = model.on(CpuBackend())
    assert again.layers[0].qkv is model.layers[0].qkv and again.embed is model.embed
    batch = ForwardBatch.single([3, 1, 4, 1, 5], 0, [2], 16, all_logits=True)
    np.testing.assert_array_equal(
        again.forward(batch, again.new_cache(4)), model.forward(batch, model.new_cache(4))
    )
