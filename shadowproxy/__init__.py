"""shadowproxy: send a copy of live traffic to a new backend, compare, and decide the cutover."""

__version__ = "0.1.0"


def compiled() -> bool:
    """True when the request path runs as mypyc-compiled code (setup.py, SHADOWPROXY_COMPILE=1)."""
    from shadowproxy import compare

    return not (compare.__file__ or "").endswith(".py")
