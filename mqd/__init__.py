"""mqd: a small, durable message queue daemon.

Only the version lives here: mqctl imports ``mqd.protocol`` and must not pull aiohttp in.
"""

__version__ = "0.1.0"
