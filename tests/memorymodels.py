"""A model that allocates a known amount of memory per batch and writes down the RSS psutil sees at its peak.

Workers import it as `memorymodels:allocate`. Each call allocates ALLOC_MB of
float64 ones (every page touched), records `<first id> <rss MiB>` to RSS_LOG,
frees the block and predicts `id_copy * 2`.
"""

from __future__ import annotations

import os

import numpy as np
import psutil


def allocate(frame):
    ids = frame["id_copy"].to_numpy()
    block = np.ones(int(os.environ["ALLOC_MB"]) * 131_072)
    rss = psutil.Process().memory_info().rss / 2**20
    with open(os.environ["RSS_LOG"], "a") as log:
        log.write(f"{int(ids.min())} {rss:.1f}\n")
    del block
    return ids * 2.0
