"""Turning a validated spec into trained, evaluated, recorded runs.

``plan`` expands a spec into runs with content-hash ids; ``local`` executes them in this process;
``train``/``evaluate`` are the training loop; ``data`` and ``modeling`` prepare inputs and models.
A distributed executor (Ray) would replace ``local`` and reuse everything else.
"""
