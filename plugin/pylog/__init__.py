"""pylog: a Docker logging driver that tags every line with its container's namespaces."""

__version__ = "0.1.0"
