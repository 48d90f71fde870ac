import json
from pathlib import Path

import pytest
import yaml

from rusts.config import (Config, RetentionPolicy, config_from_dict, default_config_yaml,
                          load_config, parse_duration)
from rusts.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_repo_rusts_yml_is_the_generated_default():
    assert (REPO / "rusts.yml").read_text() == default_config_yaml()


def test_default_file_loads_to_defaults(tmp_path):
    p = tmp_path / "rusts.yml"
    p.write_text(default_config_yaml())
    assert load_config(p) == Config()


def test_default_file_names_every_key():
    """Every attrs field of every section appears in the generated file (docs stay complete)."""
    data = yaml.safe_load(default_config_yaml())
    for section in ("server", "storage", "auth", "logging", "postgres", "query"):
        assert set(data[section]) == set(Config().to_dict()[section]) - {"wal_path"} | (
            {"jwt_secret"} if section == "auth" else set()), section
    assert data["retention_policies"] == []


def test_defaults_match_the_original():
    c = Config()
    assert (c.server.host, c.server.port, c.server.max_body_size) == ("0.0.0.0", 8086, 10485760)
    assert c.storage.wal_durability == "periodic" and c.storage.wal_retention_secs == 604800
    assert c.storage.memtable.max_points == 1_000_000
    assert Path(c.storage.wal_path) == Path("data", "wal")
    assert c.postgres.port == 5432 and not c.postgres.enabled
    assert c.logging.level == "info"


@pytest.mark.parametrize("doc, message", [
    ({"storage": {"memtable": {"max_points": "abc"}}},
     "storage.memtable.max_points: expected a positive integer, got 'abc'"),
    ({"storage": {"walx": 1}}, "storage.walx: unknown key"),
    ({"nope": 1}, "nope: unknown key"),
    ({"server": {"port": 70000}}, "server.port: expected a port number 0-65535, got 70000"),
    ({"server": {"port": True}}, "server.port: expected a port number"),
    ({"server": {"max_body_size": -1}}, "server.max_body_size: expected a positive integer"),
    ({"storage": {"wal_durability": "sometimes"}}, "storage.wal_durability: expected one of"),
    ({"storage": {"compression": "max"}}, "storage.compression: expected one of"),
    ({"auth": {"enabled": "yes please"}}, "auth.enabled: expected true or false"),
    ({"logging": {"level": "loud"}}, "logging.level: expected one of trace, debug, info, warn"),
    ({"retention_policies": [{"name": "a", "duration": "30x"}]},
     "retention_policies[0].duration: expected a positive duration"),
    ({"retention_policies": [{"name": "a"}]}, "retention_policies[0].duration: required key"),
    ({"retention_policies": {"name": "a"}}, "retention_policies: expected a list"),
    ({"retention_policies": [{"name": "a", "duration": "1d"}, {"name": "a", "duration": "2d"}]},
     "retention_policies[1].name: duplicate"),
    ({"storage": {"memtable": {"max_size_mb": 100, "hard_limit_mb": 50}}},
     "storage.memtable.hard_limit_mb: must be >= max_size_mb"),
    ({"postgres": {"tls_cert": "c.pem"}}, "postgres.tls_key: tls_cert and tls_key"),
    ({"auth": {"users": [{"username": "a"}]}}, "auth.users[0].password: required key"),
    ({"storage": 3}, "storage: expected a mapping"),
    ([1, 2], "configuration: expected a mapping"),
])
def test_bad_values_name_the_key(doc, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    assert str(info.value).startswith(message)
    assert info.value.key == message.split(":")[0] or info.value.key is None


def test_partial_file_keeps_other_defaults(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("storage:\n  memtable:\n    max_points: 5\n  wal_durability: EVERY_WRITE\n"
                 "retention_policies:\n  - {name: short, measurement: cpu, duration: 12h,"
                 " tier_after: 90m}\n  - {name: all, duration: 3600}\n")
    c = load_config(p)
    assert c.storage.memtable.max_points == 5
    assert c.storage.memtable.max_size_mb == 64
    assert c.storage.wal_durability == "every_write"
    assert c.retention_policies == (RetentionPolicy("short", "cpu", 43200, 5400),
                                    RetentionPolicy("all", "*", 3600, None))
    assert c.retention_policies[1].applies_to("mem") and not c.retention_policies[0].applies_to("m")


def test_empty_file_and_null_sections_are_defaults(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("# nothing\n")
    assert load_config(p) == Config()
    p.write_text("auth:\nlogging:\n")
    assert load_config(p) == Config()


def test_missing_explicit_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yml")


def test_no_path_uses_rusts_yml_in_cwd_or_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(None) == Config()
    (tmp_path / "rusts.yml").write_text("server:\n  port: 9999\n")
    assert load_config(None).server.port == 9999


def test_yaml_syntax_error_gives_line(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("server:\n  port: [8086\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line \d+"):
        load_config(p)


def test_overrides_win_and_are_validated(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("server:\n  port: 1234\nstorage:\n  data_dir: /a\n")
    c = load_config(p, overrides={"data_dir": str(tmp_path / "d"), "host": "127.0.0.1",
                                  "port": None})
    assert c.server.port == 1234 and c.server.host == "127.0.0.1"
    assert c.storage.data_dir == str(tmp_path / "d")
    assert c.storage.wal_path == str(tmp_path / "d" / "wal")
    with pytest.raises(ConfigError, match="server.port"):
        load_config(p, overrides={"port": -5})


@pytest.mark.parametrize("text, secs", [("30d", 2592000), ("12h", 43200), ("90m", 5400),
                                        ("3600s", 3600), ("1d12h", 129600), ("2w", 1209600),
                                        (600, 600), ("600", 600)])
def test_parse_duration(text, secs):
    assert parse_duration(text) == secs


@pytest.mark.parametrize("bad", ["", "0s", "d", "10 days", "5x", -1, 0, 1.5, None, "1h x"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_to_dict_hides_secrets():
    c = config_from_dict({"auth": {"jwt_secret": "s3cr3t-jwt",
                                   "users": [{"username": "ann", "password": "pw-hidden"}]}})
    text = json.dumps(c.to_dict())
    assert "s3cr3t-jwt" not in text and "pw-hidden" not in text
    assert c.to_dict()["auth"]["users"] == ["ann"]
    assert "s3cr3t-jwt" not in repr(c) and "pw-hidden" not in repr(c)


def _leaf_keys(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{key}.")
        else:
            yield prefix + key


def test_docs_describe_every_key():
    doc = (REPO / "docs" / "configuration.md").read_text()
    data = yaml.safe_load(default_config_yaml())
    for section, body in data.items():
        assert f"## `{section}`" in doc, section
        if isinstance(body, dict):
            for key in _leaf_keys(body):
                assert f"| `{key}` |" in doc, f"{section}.{key}"
    for key in ("name", "measurement", "duration", "tier_after"):
        assert f"| `{key}` |" in doc
