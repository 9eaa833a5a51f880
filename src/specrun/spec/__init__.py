"""The spec: TOML loading and composition (``load``, ``compose``), validation (``schema``), locating keys
in the file for errors (``locate``) and the stage settings (``stages``)."""
