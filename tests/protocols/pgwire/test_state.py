"""Transaction-control classification and the ReadyForQuery status machine."""

from __future__ import annotations

import pytest

from rusts.errors import QueryError
from rusts.protocols.pgwire._state import TransactionState, classify, deallocate_target


@pytest.mark.parametrize("sql,kind", [
    ("BEGIN", "begin"), ("begin transaction isolation level serializable", "begin"),
    ("  -- comment\n /* c */ START TRANSACTION", "begin"), ("start", None),
    ("COMMIT", "commit"), ("end", "commit"), ("commit and chain", "commit"),
    ("ROLLBACK", "rollback"), ("abort work", "rollback"),
    ("ROLLBACK TO SAVEPOINT sp", "rollback_to"), ("rollback transaction to sp", "rollback_to"),
    ("SAVEPOINT sp", "savepoint"), ("RELEASE SAVEPOINT sp", "release"),
    ("SELECT 1", None), ("", None), ("beginning", None), ("committed", None),
])
def test_classify(sql, kind):
    assert classify(sql) == kind


def test_block_lifecycle_with_failure():
    tx = TransactionState()
    assert tx.apply("begin") == ("BEGIN", None)
    assert tx.status == "T"
    tx.on_error()
    assert tx.status == "E"
    assert tx.blocked(None) and tx.blocked("savepoint") and tx.blocked("begin")
    assert not tx.blocked("rollback") and not tx.blocked("commit")
    assert tx.apply("commit") == ("ROLLBACK", None)  # COMMIT of a failed block rolls back
    assert tx.status == "I"


def test_errors_outside_a_block_do_not_fail_anything():
    tx = TransactionState()
    tx.on_error()
    assert tx.status == "I" and not tx.blocked(None)


def test_rollback_to_savepoint_recovers_a_failed_block():
    tx = TransactionState()
    tx.apply("begin")
    tx.apply("savepoint")
    tx.on_error()
    assert tx.apply("rollback_to") == ("ROLLBACK", None)
    assert tx.status == "T"


def test_warnings_and_errors_outside_blocks():
    tx = TransactionState()
    assert tx.apply("commit") == ("COMMIT", ("25P01", "there is no transaction in progress"))
    tx.apply("begin")
    assert tx.apply("begin")[1][0] == "25001"
    tx.apply("rollback")
    with pytest.raises(QueryError) as info:
        tx.apply("savepoint")
    assert info.value.sqlstate == "25P01"


@pytest.mark.parametrize("sql,target", [
    ("DEALLOCATE _pg3_0", "_pg3_0"), ("deallocate prepare S1;", "s1"), ('DEALLOCATE "My""x"', 'My"x'),
    ("DEALLOCATE ALL", None), ("  /* c */ deallocate all ;", None),
])
def test_deallocate_target(sql, target):
    assert classify(sql) == "deallocate"
    assert deallocate_target(sql) == target


def test_deallocate_syntax_error():
    with pytest.raises(QueryError):
        deallocate_target("DEALLOCATE a b")
    assert classify("DISCARD ALL") == "discard" and classify("discard plans") is None
