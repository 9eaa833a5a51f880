"""Plugins: the host (``registry``), the objects hooks register (``api``) and the built-in plugins."""

from specrun.plugins.registry import get_registry, set_registry

__all__ = ["get_registry", "set_registry"]
