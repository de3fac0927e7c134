"""infercast calibration: a real PyTorch runner, microbenchmarks and device facts.

Importing this package does not import torch; the submodules that need it import it themselves.

oneDNN builds a GEMM kernel per input shape and keeps the last 1024 in a cache. A serving engine
sees every row count from 1 to its token budget for each of its ~5 distinct weight shapes, so the
default cache thrashes and steps pay ~1 ms per linear layer to rebuild kernels (measured on the
2-vCPU AMD EPYC: rows 1..20 of four weights took 97 ms after 1,600 other shapes, 12 ms with a
larger cache). The larger cache is set here, before torch loads, unless the user set it.
"""

import os

for _name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_name, "8192")
del _name
