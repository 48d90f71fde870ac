"""A database cancelled from outside (an embedding application cancelling the nursery that holds
``rusts.open``) while a flush is being written must still shut down."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PROGRAM = textwrap.dedent('''
    import tempfile

    import trio

    import rusts
    import rusts.db

    async def main():
        entered, gate = trio.Event(), trio.Event()
        real = rusts.db.Database._encode_table

        async def parked(self, table):  # runs shielded inside the flusher's write
            out = await real(self, table)
            entered.set()
            await gate.wait()
            return out

        rusts.db.Database._encode_table = parked
        with tempfile.TemporaryDirectory() as d:
            async def use():
                async with rusts.open(d) as db:
                    await db.write("cpu,host=a usage=1 1700000000000000000")
                    await db.flush()

            async with trio.open_nursery() as n:
                n.start_soon(use)
                await entered.wait()
                n.cancel_scope.cancel()  # the segment keeper is cancelled while the flush is parked
                gate.set()
        print("shut down")

    trio.run(main)
''')


def test_a_database_cancelled_during_a_flush_shuts_down() -> None:
    """Found by the HTTP fuzzer's teardown: the segment keeper ended on the cancellation while the
    flusher, shielded, was writing a table; the flusher then waited for the keeper's reply to its
    publish forever (the process hung at exit). The keeper now runs until its channel closes."""
    out = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=45)
    assert out.returncode == 0 and "shut down" in out.stdout, out.stderr[-3000:]
