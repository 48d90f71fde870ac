"""rusts: a time-series database on trio.

Embed it::

    async with rusts.open("./data") as db:
        await db.write("cpu,host=a usage=1 1")
        result = await db.query({"measurement": "cpu", "time_range": {"start": 0, "end": 2}})
"""

from rusts.errors import RustsError as RustsError

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing rusts must stay cheap for tools and tests
    if name == "open":
        from rusts.db import open as _open
        return _open
    if name == "Database":
        from rusts.db import Database
        return Database
    raise AttributeError(name)
