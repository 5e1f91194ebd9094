"""Triton GPU kernels for lutlm (installed as ``lutlm.kernels``); none ship yet."""
