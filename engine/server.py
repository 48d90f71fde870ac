"""Run the server: the database, the HTTP API and (when enabled) the PostgreSQL wire protocol.

``run(config)`` is what ``rusts-server`` calls. ``serve_http(db, host, port)`` serves the HTTP
API from inside any trio nursery (embedding: ``await nursery.start(serve_http, db, "127.0.0.1", 0)``
returns the bound port).

Start order: HTTP first (``/ready`` answers 503 while recovery runs), then the database's actors
(:func:`rusts.db.running`), then pgwire. Stop order on SIGINT/SIGTERM: stop accepting HTTP and
pgwire connections and let requests in flight finish (bounded by 5 s), then the database stops:
queued and running queries finish, the final flush and WAL sync run shielded from cancellation.
"""

from __future__ import annotations

import gc
import logging
import signal
from functools import partial

import trio

from rusts.protocols.http.serve import serve_http

log = logging.getLogger("rusts.server")

__all__ = ["run", "serve", "serve_http"]


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
    running_adapters: list[str] = []

    async def adapter(name, fn, task_status=trio.TASK_STATUS_IGNORED):
        running_adapters.append(name)
        try:
            await fn(task_status=task_status)
        finally:
            running_adapters.remove(name)

    async with trio.open_nursery() as outer:
        outer.start_soon(watch_signals)
        if busy.window > 0:
            outer.start_soon(busy.run)
        # HTTP first, so /ready answers 503 while recovery runs
        port = await outer.start(adapter, "http", partial(
            serve_http, db, config.server.host, config.server.port, shutdown_trigger=stop.wait, busy_poll=busy))
        log.info("HTTP listening on %s:%d (recovering)", config.server.host, port)
        async with rusts.db.running(db):
            for p in db.problems:
                log.warning("recovery: %s", p)
            # what start-up and recovery built lives as long as the server: out of the garbage
            # collector's sight, so its full collections do not walk it (~40 ms pauses otherwise)
            gc.freeze()
            node = trio.CancelScope()
            if config.cluster:  # this server is a cluster node (rusts.cluster, docs/cluster.md)
                from rusts.cluster import run_cluster_node

                async def cluster_node(task_status=trio.TASK_STATUS_IGNORED):
                    with node:
                        await run_cluster_node(db, config, task_status=task_status)

                await outer.start(cluster_node)
            pg_port = None
            if config.postgres.enabled:
                from rusts.protocols.pgwire.adapter import serve_postgres

                pg_port = await outer.start(adapter, "pgwire", partial(
                    serve_postgres, db, config, poller=busy, shutdown_trigger=stop.wait))
                log.info("PostgreSQL wire protocol listening on %s:%d", config.postgres.host, pg_port)
            print(f"rusts-server ready: http://{config.server.host}:{port}"
                  + (f" postgres://{config.postgres.host}:{pg_port}" if pg_port else ""), flush=True)
            task_status.started(port)
            await stop.wait()
            # the adapters stop accepting and drain their requests (bounded) before the
            # database stops (queries finish, final flush, WAL closed)
            with trio.move_on_after(6.0):
                while running_adapters:
                    await trio.sleep(0.02)
            node.cancel()  # the cluster node stops applying before the database closes
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
