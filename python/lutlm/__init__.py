"""lutlm: low-bit LLM inference with lookup-table kernels."""

from lutlm._C import get_num_threads, set_isa, set_num_threads
from lutlm.info import cpu_info

__version__ = "0.1.0"
__all__ = ["cpu_info", "get_num_threads", "set_isa", "set_num_threads", "__version__"]
