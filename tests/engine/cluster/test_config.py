"""cluster.toml: the original's file parses; every mistake is refused naming its key."""

from __future__ import annotations

import pytest

from rusts.cluster.config import cluster_from_dict, load_cluster_config
from rusts.errors import ConfigError

ORIGINAL_EXAMPLE = """\
node_id = "node1"
cluster_name = "rusts-prod"
replication_mode = "Quorum"    # Sync, Quorum, or Async
replication_factor = 2
shard_count = 16
sharding_strategy = "BySeries" # BySeries, ByMeasurement, ByTime

[[nodes]]
id = "node1"
address = "10.0.1.1:8086"
shards = [0, 1, 2, 3, 4, 5, 6, 7]

[[nodes]]
id = "node2"
address = "10.0.1.2:8086"
shards = [8, 9, 10, 11, 12, 13, 14, 15]
replica_shards = [0, 1, 2, 3, 4, 5, 6, 7]

[[nodes]]
id = "node3"
address = "10.0.1.3:8086"
replica_shards = [8, 9, 10, 11, 12, 13, 14, 15]
"""


def _base(**over):
    d = {"node_id": "a", "replication_factor": 2, "shard_count": 4,
         "nodes": [{"id": "a", "address": "127.0.0.1:1", "shards": [0, 1], "replica_shards": [2, 3]},
                   {"id": "b", "address": "127.0.0.1:2", "shards": [2, 3], "replica_shards": [0, 1]}]}
    d.update(over)
    return d


def test_the_original_readme_example_loads(tmp_path):
    p = tmp_path / "cluster.toml"
    p.write_text(ORIGINAL_EXAMPLE + '\n[nats]\nservers = ["nats://127.0.0.1:4222"]\n')
    cfg = load_cluster_config(p)
    assert cfg.node_id == "node1" and cfg.cluster_name == "rusts-prod"
    assert cfg.replication_mode == "Quorum" and cfg.replication_factor == 2
    assert cfg.sharding_strategy == "BySeries" and cfg.shard_count == 16
    assert cfg.owners(3) == ("node1", "node2")
    assert cfg.owners(12) == ("node2", "node3")
    assert cfg.node("node2").owned == tuple(range(8, 16)) + tuple(range(8))
    assert cfg.nats.servers == ("nats://127.0.0.1:4222",) and cfg.nats.stream_replicas == 1


def test_strategy_table_form_carries_the_time_bucket():
    cfg = cluster_from_dict(_base(sharding_strategy={"ByTime": {"duration_nanos": 3_600_000_000_000}}))
    assert cfg.sharding_strategy == "ByTime" and cfg.time_bucket_ns == 3_600_000_000_000
    cfg = cluster_from_dict(_base(sharding_strategy="Composite"))
    assert cfg.time_bucket_ns == 86_400 * 10**9


def test_hedge_delay_defaults_to_half_a_second_and_zero_turns_it_off():
    assert cluster_from_dict(_base()).hedge_after_secs == 0.5
    assert cluster_from_dict(_base(hedge_after_secs=0)).hedge_after_secs == 0.0


def test_nats_replicas_default_to_three_with_three_servers():
    cfg = cluster_from_dict(_base(nats={"servers": ["nats://h1:4222", "nats://h2:4222", "nats://h3:4222"]}))
    assert cfg.nats.stream_replicas == 3


@pytest.mark.parametrize("change, key, words", [
    ({"nodes": [{"id": "a", "address": "127.0.0.1:1", "shards": [0, 1, 2]},
                {"id": "b", "address": "127.0.0.1:2", "replica_shards": [0, 1, 2, 3]}],
      "replication_factor": 1}, "nodes", "shard 3 has no owner"),
    ({"replication_factor": 3}, "replication_factor", "exceeds the node count 2"),
    ({"sharding_strategy": "ByHost"}, "sharding_strategy", "unknown strategy 'ByHost'"),
    ({"node_id": "zz"}, "node_id", "'zz' is not the id of any [[nodes]] entry"),
    ({"replication_mode": "Eventually"}, "replication_mode", "unknown mode"),
    ({"shard_count": 0}, "shard_count", "expected an integer >= 1"),
    ({"colour": 1}, "colour", "unknown key"),
    ({"nats": {"servers": []}}, "nats.servers", "non-empty list"),
    ({"nats": {"servers": ["nats://a:1"], "replicas": 3}}, "nats.replicas", "exceeds the number"),
    ({"partial_results": "yes"}, "partial_results", "expected true or false"),
    ({"hedge_after_secs": -0.1}, "hedge_after_secs", "expected seconds >= 0"),
    ({"nats": {"user": "rusts"}}, "nats.password", "user and password go together"),
    ({"nats": {"user": "u", "password": "p", "token": "t"}}, "nats.token", "choose one way"),
    ({"nats": {"nkeys_seed": "/nonexistent/seed.nk"}}, "nats.nkeys_seed", "no such file"),
    ({"nats": {"tls_cert": "/etc/hostname"}}, "nats.tls_key", "go together"),
    ({"nats": {"max_age_secs": -1}}, "nats.max_age_secs", "expected seconds >= 0"),
    ({"nats": {"max_bytes": 1000}}, "nats.max_bytes", "expected an integer >= 1048576"),
])
def test_mistakes_are_refused_naming_the_key(change, key, words):
    with pytest.raises(ConfigError) as ei:
        cluster_from_dict(_base(**change))
    assert str(ei.value).startswith(f"{key}:") and words in str(ei.value)


def test_node_mistakes_name_the_node_entry():
    d = _base()
    d["nodes"][1]["shards"] = [2, 9]
    with pytest.raises(ConfigError, match=r"^nodes\[1\]\.shards: shard 9 is outside 0\.\.3"):
        cluster_from_dict(d)
    d = _base()
    d["nodes"][0]["address"] = "nohost"
    with pytest.raises(ConfigError, match=r"^nodes\[0\]\.address: expected host:port"):
        cluster_from_dict(d)
    d = _base()
    d["nodes"][1]["shards"] = [1, 2, 3]
    d["nodes"][1]["replica_shards"] = [0]
    with pytest.raises(ConfigError, match="shard 1 is a primary shard of several nodes"):
        cluster_from_dict(d)


def test_rf_two_needs_two_owners_per_shard():
    d = _base()
    d["nodes"][0]["replica_shards"] = [2]
    with pytest.raises(ConfigError, match="^replication_factor: shard 3 has 1 owner"):
        cluster_from_dict(d)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cluster file not found"):
        load_cluster_config(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("node_id = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_cluster_config(p)
    p.write_text(ORIGINAL_EXAMPLE.replace('node_id = "node1"', 'node_id = "node9"'))
    with pytest.raises(ConfigError, match=f"^{p}: node_id: 'node9'"):
        load_cluster_config(p)


def test_nats_credentials_and_retention_reach_the_client_and_the_streams(tmp_path):
    seed = tmp_path / "node.nk"
    seed.write_text("SUAEXAMPLE")
    cfg = cluster_from_dict(_base(nats={"servers": ["nats://h:4222"], "nkeys_seed": str(seed),
                                        "max_age_secs": 86400, "max_bytes": 1 << 30}))
    assert cfg.nats.connect_options() == {"nkeys_seed": str(seed)}
    assert (cfg.nats.max_age_secs, cfg.nats.max_bytes) == (86400.0, 1 << 30)
    cfg = cluster_from_dict(_base(nats={"user": "rusts", "password": "s3cret"}))
    assert cfg.nats.connect_options() == {"user": "rusts", "password": "s3cret"}
    assert cluster_from_dict(_base()).nats.connect_options() == {}
