"""infercast calibration: a real PyTorch runner, microbenchmarks and device facts.

Importing this package does not import torch; the submodules that need it import it themselves.
"""
