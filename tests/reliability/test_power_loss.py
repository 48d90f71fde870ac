"""Power loss and torn writes, simulated through the file-operation seam in rel_powerloss.py:
a workload (writes, flushes, a delete) is recorded once per WAL mode, then states a power cut
could leave (unsynced writes lost, renames not durable, dirty pages persisted in any subset,
torn and zero-filled tails) are built and opened. No state may fail to open or answer a wrong
value; in ``every_write`` no acknowledged point may be missing. The long tier
(perf/soak/power_loss.py) checks at least 20,000 states."""

from __future__ import annotations

import pytest

from rel_powerloss import record, run_states

STATES = {"every_write": 60, "periodic": 30}


@pytest.mark.parametrize("mode", list(STATES))
def test_power_loss_states_open_without_wrong_answers(tmp_path, mode: str) -> None:
    rec, log = record(tmp_path / "live", mode)
    assert rec.count > 50  # fsyncs, renames, unlinks of the workload
    run_states(rec, log, mode, STATES[mode], seed=7, scratch=tmp_path / "states")
