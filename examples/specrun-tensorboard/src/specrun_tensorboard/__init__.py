"""specrun-tensorboard: TensorBoard event files for every run specrun trains (see ``plugin``)."""
