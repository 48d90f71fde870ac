"""Run the server: the database, the HTTP API and (when enabled) the PostgreSQL wire protocol.

``run(config)`` is what ``rusts-server`` calls. ``serve_http(db, host, port)`` serves the HTTP
API from inside any trio nursery (embedding: ``await nursery.start(serve_http, db, "127.0.0.1", 0)``
returns the bound port).
"""

from __future__ import annotations

import gc
import logging
import signal
from functools import partial

import trio

log = logging.getLogger("rusts.server")


async def serve_http(db, host: str, port: int, *, shutdown_trigger=None, busy_poll=None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the HTTP API for ``db``; ``task_status.started(port)`` with the bound port.

    ``busy_poll``: a :class:`rusts.busypoll.BusyPoll` (run by the caller) told about each
    request. Returns after ``shutdown_trigger()`` returns and requests in flight finish (at most
    5 s), or when cancelled.
    """
    from rusts.protocols.http import server as httpserver
    from rusts.protocols.http.app import create_app

    await httpserver.serve(create_app(db), host, port,
                           read_timeout=float(db.config.server.request_timeout_secs),
                           keep_alive_timeout=75.0, graceful_timeout=5.0, backlog=1024,
                           shutdown_trigger=shutdown_trigger, poller=busy_poll, task_status=task_status)


async def serve(config, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Open the database and serve until SIGINT/SIGTERM, then shut down gracefully (final flush)."""
    import rusts.db

    stop = trio.Event()

    async def watch_signals():
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            async for s in sigs:
                log.info("received %s: shutting down", signal.Signals(s).name)
                stop.set()
                return

    from rusts.busypoll import BusyPoll

    db = rusts.db.Database(config)
    busy = BusyPoll(config.server.busy_poll_us / 1e6)
    async with trio.open_nursery() as outer:
        outer.start_soon(watch_signals)
        if busy.window > 0:
            outer.start_soon(busy.run)
        # HTTP first, so /ready answers 503 while recovery runs
        port = await outer.start(lambda task_status: serve_http(
            db, config.server.host, config.server.port, shutdown_trigger=stop.wait, busy_poll=busy,
            task_status=task_status))
        log.info("HTTP listening on %s:%d (recovering)", config.server.host, port)
        async with rusts.db.running(db):
            for p in db.problems:
                log.warning("recovery: %s", p)
            # what start-up and recovery built lives as long as the server: out of the garbage
            # collector's sight, so its full collections do not walk it (~40 ms pauses otherwise)
            gc.freeze()
            async with trio.open_nursery() as nursery:
                if config.cluster:  # this server is a cluster node (rusts.cluster, docs/cluster.md)
                    from rusts.cluster import run_cluster_node

                    await nursery.start(run_cluster_node, db, config)
                pg_port = None
                if config.postgres.enabled:
                    from rusts.protocols.pgwire.adapter import serve_postgres

                    pg_port = await nursery.start(partial(serve_postgres, db, config, poller=busy))
                    log.info("PostgreSQL wire protocol listening on %s:%d", config.postgres.host, pg_port)
                print(f"rusts-server ready: http://{config.server.host}:{port}"
                      + (f" postgres://{config.postgres.host}:{pg_port}" if pg_port else ""), flush=True)
                task_status.started(port)
                await stop.wait()
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    log.info("shutdown complete")


def run(config) -> int:
    from rusts import malloc
    from rusts.errors import RustsError

    malloc.tune()
    try:
        trio.run(serve, config)
    except RustsError as e:
        import sys
        print(f"rusts-server: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
