"""Portfolio risk platform: Dagster assets over numpy and numba kernels.

``OPENBLAS_THREAD_TIMEOUT``: after each threaded product OpenBLAS' worker threads spin for ``2**28`` CPU cycles by
default before they sleep, so with Python and numba work between the pipeline's many products a worker spends a
core's time spinning. Its minimum, 4 (``2**4`` cycles), makes them sleep at once. The thread count, and so how a
product is split and every bit of its result, is unchanged. OpenBLAS reads it when it loads, so it is set here,
before this package imports numpy, unless the environment already sets it (a process that imported numpy first
keeps its OpenBLAS' setting).
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
