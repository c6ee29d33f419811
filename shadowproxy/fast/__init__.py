"""The fast engine: HTTP/1.1 server and upstream client on asyncio protocols with httptools.

aiohttp's client costs most of a naive proxy's time per request; these keep-alive pools and
the plain protocol server do the same job with far fewer allocations and awaits. The
aiohttp engine (proxy.py) stays the reference implementation: both pass the same tests.
"""
