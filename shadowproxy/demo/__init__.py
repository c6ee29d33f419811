"""Simulated Deno and Workers backends of the pitch platform, and demo traffic for them."""

from shadowproxy.demo.backends import make_app
from shadowproxy.demo.profiles import Flavor
from shadowproxy.demo.traffic import TrafficSummary, drive

__all__ = ["Flavor", "TrafficSummary", "drive", "make_app"]
