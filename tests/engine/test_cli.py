import sys
import types

import pytest

from rusts import cli
from rusts.config import Config, default_config_yaml


@pytest.fixture
def fake_server(monkeypatch):
    calls = []
    mod = types.ModuleType("rusts.server")

    def run(config):
        calls.append(config)
        return 0

    mod.run = run
    monkeypatch.setitem(sys.modules, "rusts.server", mod)
    import rusts
    monkeypatch.setattr(rusts, "server", mod, raising=False)
    return calls


def test_runs_server_with_overrides(tmp_path, monkeypatch, fake_server):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-d", str(tmp_path / "x"), "-H", "127.0.0.1", "-p", "0"]) == 0
    (config,) = fake_server
    assert config.storage.data_dir == str(tmp_path / "x")
    assert (config.server.host, config.server.port) == ("127.0.0.1", 0)


def test_defaults_without_file(tmp_path, monkeypatch, fake_server):
    monkeypatch.chdir(tmp_path)
    assert cli.main([]) == 0
    assert fake_server == [Config()]


def test_config_error_is_one_line_exit_2(tmp_path, capsys, fake_server):
    p = tmp_path / "bad.yml"
    p.write_text("storage:\n  memtable:\n    max_points: abc\n")
    assert cli.main(["-c", str(p)]) == 2
    err = capsys.readouterr().err
    assert err == ("rusts-server: config error: storage.memtable.max_points: "
                   "expected a positive integer, got 'abc'\n")
    assert fake_server == []


def test_missing_config_file_exit_2(tmp_path, capsys, fake_server):
    assert cli.main(["--config", str(tmp_path / "nope.yml")]) == 2
    assert "config error" in capsys.readouterr().err
    assert cli.main(["-p", "65536"]) == 2


def test_generate_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--generate-config"]) == 0
    assert (tmp_path / "rusts.yml").read_text() == default_config_yaml()
    (tmp_path / "rusts.yml").write_text("mine")
    assert cli.main(["--generate-config"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "rusts.yml").read_text() == "mine"
    assert cli.main(["--generate-config", "--force"]) == 0
    assert (tmp_path / "rusts.yml").read_text() == default_config_yaml()
    assert cli.main(["--generate-config", str(tmp_path / "other.yml")]) == 0
    assert (tmp_path / "other.yml").read_text() == default_config_yaml()


def test_version_and_bad_flags(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("rusts-server ")
    assert cli.main(["--port", "abc"]) == 2


def test_server_runtime_error_exit_1(tmp_path, monkeypatch, capsys, fake_server):
    from rusts.errors import DataDirLockedError
    import rusts.server

    def run(config):
        raise DataDirLockedError("data dir ./data is locked by pid 1")

    monkeypatch.setattr(rusts.server, "run", run)
    monkeypatch.chdir(tmp_path)
    assert cli.main([]) == 1
    assert capsys.readouterr().err == "rusts-server: error: data dir ./data is locked by pid 1\n"


# --- logsetup (configured by the CLI before the server starts) ---------------------------------

import io
import json
import logging

from rusts.config import LoggingConfig
from rusts.logsetup import TRACE, configure_logging


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_text_logging_levels_and_switches(restore_root_logger):
    buf = io.StringIO()
    configure_logging(LoggingConfig(level="warn", show_target=True, show_location=True,
                                    show_thread_ids=True), stream=buf)
    log = logging.getLogger("rusts.test")
    log.info("hidden")
    log.warning("disk %s", "slow")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    assert " WARN [thread " in lines[0]
    assert "rusts.test test_cli.py:" in lines[0] and lines[0].endswith(": disk slow")


def test_trace_level_and_idempotent(restore_root_logger):
    buf1, buf2 = io.StringIO(), io.StringIO()
    configure_logging(LoggingConfig(level="trace", show_target=False), stream=buf1)
    configure_logging(LoggingConfig(level="trace", show_target=False), stream=buf2)
    logging.getLogger("rusts.x").log(TRACE, "deep")
    assert buf1.getvalue() == ""
    line = buf2.getvalue().strip()
    assert "TRACE deep" in line and "rusts.x" not in line


def test_json_logging_one_object_per_line(restore_root_logger):
    buf = io.StringIO()
    configure_logging(LoggingConfig(format="json", level="debug"), stream=buf)
    log = logging.getLogger("rusts.wal")
    log.debug("synced", extra={"bytes": 42})
    try:
        raise OSError("boom")
    except OSError:
        log.exception("failed\nbadly")
    a, b = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert a["level"] == "DEBUG" and a["message"] == "synced" and a["target"] == "rusts.wal"
    assert a["bytes"] == 42 and "thread_id" not in a
    assert b["level"] == "ERROR" and "OSError: boom" in b["exception"]


def test_errors_wrapped_in_exception_groups(tmp_path, monkeypatch, capsys, fake_server):
    from rusts.errors import ConfigError, StorageError
    import rusts.server

    monkeypatch.chdir(tmp_path)
    raised = []

    def run(config):
        raise raised[0]

    monkeypatch.setattr(rusts.server, "run", run)
    raised[:] = [BaseExceptionGroup("g", [KeyboardInterrupt()])]
    assert cli.main([]) == 130
    raised[:] = [ExceptionGroup("g", [ExceptionGroup("h", [StorageError("disk full")])])]
    assert cli.main([]) == 1
    assert capsys.readouterr().err == "rusts-server: error: disk full\n"
    raised[:] = [ConfigError("postgres.tls_cert: cannot read x.pem")]
    assert cli.main([]) == 2
    assert "config error: postgres.tls_cert" in capsys.readouterr().err
    raised[:] = [ExceptionGroup("g", [RuntimeError("bug")])]
    with pytest.raises(ExceptionGroup):  # unexpected errors keep their traceback
        cli.main([])
