"""Turning a validated spec into trained, evaluated, recorded runs.

``plan`` expands a spec into runs with content-hash ids; ``local`` executes them in this process;
``train``/``evaluate`` are the training loop; ``data`` and ``modeling`` prepare inputs and models.
A distributed executor (Ray) would replace ``local`` and reuse everything else.
"""

import os

#: Kernel caches keyed by tensor shapes, bounded (issue 22: a long sweep in one process holds its memory).
#: bf16 matrix products on the CPU go through oneDNN, which keeps every primitive it builds in a
#: process-wide cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1,024 by default), and through ideep, PyTorch's
#: oneDNN layer, which keeps its own caches per thread (``LRU_CACHE_CAPACITY``, 1,024 per kind of op). A
#: primitive is built per shape: (batch x width) rows x a layer's in and out features; each holds 0.3-3 MB
#: of heap (more with more rows). Length-grouped batches of every width, evaluation batches and each new
#: configuration of a sweep (LoRA placement, method, dataset) bring new shapes, so a sweep in one process
#: filled these caches run after run (+267 MB between runs 5 and 50 of ``benchmarks/bench_memory.py
#: --study``: 1.35x), though nothing of a run outlives it in Python. Both libraries read their variable
#: once, when they build their first primitive; a value already in the environment is kept.
KERNEL_CACHE_CAPACITY = 128
for _variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_variable, str(KERNEL_CACHE_CAPACITY))
del _variable
