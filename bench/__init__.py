"""The benchmark harness: shadowproxy against direct and nginx `mirror`, on loopback only.

Run `python -m bench.run` (`make bench`) or `python -m bench.run --smoke` (`make bench-smoke`).
"""
