"""Core types and helpers that several layers share: the run boundary (``task``: what a run is given and
gives back), what analyses read and write (``results``: a stored run, a result table) and loading a
pretrained classifier (``models``). Nothing here imports a higher part of specrun."""
