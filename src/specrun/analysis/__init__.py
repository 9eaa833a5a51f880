"""Running analyses over an experiment's stored runs (``engine``), and the statistics the built-in
analysis plugins share (``stats``)."""
