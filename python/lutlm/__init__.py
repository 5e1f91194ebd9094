"""lutlm: low-bit LLM inference with lookup-table kernels."""

from lutlm._C import get_num_threads, set_isa, set_num_threads
from lutlm.engine.sampling_params import SamplingParams
from lutlm.info import cpu_info

__version__ = "0.1.0"
__all__ = [
    "LLM",
    "SamplingParams",
    "cpu_info",
    "get_num_threads",
    "set_isa",
    "set_num_threads",
    "__version__",
]


def __getattr__(name: str):
    # LLM pulls in the model stack; import it on first use.
    if name == "LLM":
        from lutlm.llm import LLM

        return LLM
    raise AttributeError(f"module 'lutlm' has no attribute {name!r}")
