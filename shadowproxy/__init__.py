"""shadowproxy: send a copy of live traffic to a new backend, compare, and decide the cutover."""

__version__ = "0.1.0"
