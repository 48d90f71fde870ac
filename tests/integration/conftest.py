"""Start the real server (``rusts-server``) as a subprocess on a free loopback port."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

BIN = pathlib.Path(sys.executable).parent / "rusts-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A rusts-server process with its own config file and data directory."""

    def __init__(self, root: pathlib.Path, **overrides) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        self.pg_port = free_port()
        cfg = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "storage": {"data_dir": str(self.data_dir), "wal_durability": "periodic"},
            "logging": {"level": "warn"},
            "postgres": {"enabled": False, "host": "127.0.0.1", "port": self.pg_port},
        }
        for section, values in overrides.items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        self.config_path = root / "rusts.yml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server.log"

    def start(self, timeout: float = 30.0) -> "Server":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN), "-c", str(self.config_path)], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                r = httpx.get(self.url + "/ready", timeout=1.0)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s: {self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self.log.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.log.close()

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)


@pytest.fixture
def server_factory(tmp_path):
    servers = []

    def make(root: pathlib.Path | None = None, **overrides) -> Server:
        if root is None:
            root = tmp_path / f"srv{len(servers)}"
            root.mkdir()
        s = Server(root, **overrides)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc is not None:
            s.kill()


@pytest.fixture
def server(server_factory):
    return server_factory().start()


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    """Like server_factory, for servers shared by the tests of one module."""
    servers = []

    def make(**overrides) -> Server:
        root = tmp_path_factory.mktemp("srv")
        s = Server(root, **overrides)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc is not None:
            s.stop()
