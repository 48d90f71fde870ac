"""Server configuration: the ``rusts.yml`` file, validated into frozen attrs classes.

Design:
    * Every section is a frozen attrs class whose defaults ARE the documented defaults, so
      ``Config()`` is the configuration of a server started without a file, and loading the
      generated ``rusts.yml`` gives exactly ``Config()`` (a test holds us to that).
    * Validation is table driven: each attrs field carries a checker in its metadata. The loader
      walks the YAML mapping, rejects unknown keys and converts each value with its checker. Every
      error is a :class:`rusts.errors.ConfigError` whose message starts with the dotted key path
      (``storage.memtable.max_points: expected a positive integer, got 'abc'``) so an operator can
      find the line to fix without reading a traceback.
    * Values are strict: ``"64"`` is not an integer and ``1`` is not a boolean. YAML already
      types scalars, so a quoted number is almost always a mistake worth reporting.
    * Paths stay as written (``wal_dir: null`` stays None); derived paths are properties
      (:attr:`StorageConfig.wal_path`), so a ``--data-dir`` override moves the WAL with it.
    * Secrets (``auth.jwt_secret``, user passwords) never leave through :meth:`Config.to_dict`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rusts.errors import ConfigError

DEFAULT_CONFIG_PATH = "rusts.yml"

WAL_DURABILITY_MODES = ("every_write", "periodic", "os_default", "none")
COMPRESSION_LEVELS = ("none", "fast", "default", "best")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")

Checker = Callable[[Any, str], Any]


# --------------------------------------------------------------------------- value checkers


def _fail(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{path}: expected {expected}, got {value!r}", key=path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any, path: str) -> int:
    if not _is_int(value) or value <= 0:
        raise _fail(path, "a positive integer", value)
    return value


def _non_negative_int(value: Any, path: str) -> int:
    if not _is_int(value) or value < 0:
        raise _fail(path, "a non-negative integer", value)
    return value


def _positive_number(value: Any, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(path, "a positive number", value)
    if isinstance(value, float) and value == int(value):
        return int(value)
    return value


def _port(value: Any, path: str) -> int:
    if not _is_int(value) or not 0 <= value <= 65535:
        raise _fail(path, "a port number 0-65535", value)
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _non_empty_str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "a non-empty string", value)
    return value


def _path(value: Any, path: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return _non_empty_str(value, path)


def _enum(choices: tuple[str, ...]) -> Checker:
    def check(value: Any, path: str) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise _fail(path, "one of " + ", ".join(choices), value)

    return check


def _optional(inner: Checker) -> Checker:
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")


def parse_duration(value: Any, path: str = "duration") -> int:
    """Parse a human duration into whole seconds.

    Args:
        value: An integer number of seconds, or a string such as ``"30d"``, ``"12h"``, ``"90m"``,
            ``"3600s"``, ``"2w"`` or a combination like ``"1d12h"``. A bare digit string counts
            as seconds.
        path: The key path used in error messages.

    Returns:
        The duration in seconds (> 0).

    Raises:
        ConfigError: The value is not a positive duration.
    """
    if _is_int(value):
        if value > 0:
            return value
        raise _fail(path, "a positive duration like '30d', '12h', '90m' or seconds", value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and int(text) > 0:
            return int(text)
        pos, total = 0, 0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text) and total > 0:
            return total
    raise _fail(path, "a positive duration like '30d', '12h', '90m' or seconds", value)


def _field(default: Any, check: Checker, doc: str = "") -> Any:
    return attrs.field(default=default, metadata={"check": check, "doc": doc})


def _section(cls: type) -> Any:
    return attrs.field(factory=cls, metadata={"section": cls})


# --------------------------------------------------------------------------- sections


@attrs.frozen
class ServerConfig:
    """HTTP server settings."""

    host: str = _field("0.0.0.0", _non_empty_str)
    port: int = _field(8086, _port)
    max_body_size: int = _field(10485760, _positive_int)
    request_timeout_secs: int | float = _field(30, _positive_number)
    busy_poll_us: int = _field(2000, _non_negative_int)
    max_line_bytes: int = _field(1048576, _positive_int)
    max_connections: int = _field(1000, _positive_int)
    tls_cert: str | None = _field(None, _optional(_path))
    tls_key: str | None = _field(None, _optional(_path))


@attrs.frozen
class MemtableConfig:
    """When the in-memory buffer is flushed to a segment, and when writes are refused."""

    max_size_mb: int = _field(64, _positive_int)
    max_points: int = _field(1000000, _positive_int)
    max_age_secs: int = _field(60, _positive_int)
    hard_limit_mb: int = _field(512, _positive_int)

    @property
    def max_size_bytes(self) -> int:
        return self.max_size_mb * 1024 * 1024

    @property
    def hard_limit_bytes(self) -> int:
        return self.hard_limit_mb * 1024 * 1024


@attrs.frozen
class StorageConfig:
    """Where data lives and how it is written (WAL, memtable, partitions, segments)."""

    data_dir: str = _field("./data", _path)
    wal_dir: str | None = _field(None, _optional(_path))
    wal_durability: str = _field("periodic", _enum(WAL_DURABILITY_MODES))
    wal_sync_interval_ms: int = _field(100, _positive_int)
    wal_retention_secs: int | None = _field(604800, _optional(_non_negative_int))
    wal_segment_max_mb: int = _field(64, _positive_int)
    memtable: MemtableConfig = _section(MemtableConfig)
    partition_duration_hours: int = _field(24, _positive_int)
    compression: str = _field("default", _enum(COMPRESSION_LEVELS))
    block_rows: int = _field(4096, _positive_int)
    block_duration_secs: int = _field(3600, _non_negative_int)
    cold_after_hours: int | None = _field(24, _optional(_positive_int))
    cold_idle_secs: int = _field(20, _non_negative_int)
    max_series: int | None = _field(10000000, _optional(_positive_int))
    max_series_per_measurement: int | None = _field(1000000, _optional(_positive_int))

    @property
    def wal_path(self) -> str:
        """The WAL directory: ``wal_dir`` or ``data_dir/wal``."""
        return self.wal_dir if self.wal_dir is not None else os.path.join(self.data_dir, "wal")

    @property
    def partition_duration_ns(self) -> int:
        return self.partition_duration_hours * 3600 * 1_000_000_000


def _scopes(value: Any, path: str) -> tuple[str, ...]:
    from rusts.security.scopes import SCOPES, parse_scopes

    got = parse_scopes(value, path)
    return tuple(s for s in SCOPES if s in got)


def _measurements(value: Any, path: str) -> tuple[str, ...]:
    from rusts.security.scopes import parse_measurements

    return parse_measurements(value, path)


def _password(value: Any, path: str) -> str:
    from rusts.security.passwords import validate

    value = _non_empty_str(value, path)
    try:
        validate(value)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}", key=path) from None
    return value


@attrs.frozen
class User:
    """A user for pgwire password auth, HTTP basic auth and ``POST /auth/token``. ``password``:
    plain, a SCRAM-SHA-256 verifier, or a bcrypt/argon2 hash; ``scopes`` (None = read, write and
    admin) and ``measurements`` (None = all) limit what the user's logins and tokens may do."""

    username: str = _field(None, _non_empty_str)
    password: str = attrs.field(default=None, repr=False, metadata={"check": _password})
    scopes: tuple[str, ...] | None = _field(None, _optional(_scopes))
    measurements: tuple[str, ...] | None = _field(None, _optional(_measurements))


@attrs.frozen
class AuthConfig:
    """Authentication. Off by default."""

    enabled: bool = _field(False, _bool)
    jwt_secret: str = attrs.field(default="change-me-in-production", repr=False,
                                  metadata={"check": _non_empty_str})
    token_expiration_secs: int = _field(3600, _positive_int)
    users: tuple[User, ...] = attrs.field(default=(), repr=False, metadata={"list_of": User})
    jwt_public_key: str | None = _field(None, _optional(_path))
    jwt_audience: str | None = _field(None, _optional(_non_empty_str))
    jwt_issuer: str | None = _field(None, _optional(_non_empty_str))


@attrs.frozen
class LoggingConfig:
    """Log output (see :mod:`rusts.logsetup`)."""

    level: str = _field("info", _enum(LOG_LEVELS))
    show_target: bool = _field(True, _bool)
    show_thread_ids: bool = _field(False, _bool)
    show_location: bool = _field(False, _bool)
    format: str = _field("text", _enum(LOG_FORMATS))


@attrs.frozen
class RetentionPolicy:
    """Delete data of ``measurement`` ("*" = every measurement) older than ``duration`` seconds;
    move it to the cold tier after ``tier_after`` seconds when set."""

    name: str = _field(None, _non_empty_str)
    measurement: str = _field("*", _non_empty_str)
    duration: int = _field(None, parse_duration)
    tier_after: int | None = _field(None, _optional(parse_duration))

    @property
    def duration_ns(self) -> int:
        return self.duration * 1_000_000_000

    @property
    def tier_after_ns(self) -> int | None:
        return None if self.tier_after is None else self.tier_after * 1_000_000_000

    def applies_to(self, measurement: str) -> bool:
        return self.measurement == "*" or self.measurement == measurement


@attrs.frozen
class PostgresConfig:
    """PostgreSQL wire protocol server."""

    enabled: bool = _field(False, _bool)
    host: str = _field("0.0.0.0", _non_empty_str)
    port: int = _field(5432, _port)
    max_connections: int = _field(100, _positive_int)
    tls_cert: str | None = _field(None, _optional(_path))
    tls_key: str | None = _field(None, _optional(_path))
    require_tls: bool = _field(False, _bool)


@attrs.frozen
class QueryConfig:
    """Limits on queries."""

    max_concurrent: int = _field(16, _positive_int)
    timeout_secs: int | float = _field(30, _positive_number)
    max_rows: int = _field(10000000, _positive_int)
    memory_limit_mb: int = _field(2048, _positive_int)
    recent_cache_mb: int = _field(128, _non_negative_int)


@attrs.frozen
class Config:
    """The whole configuration. ``Config()`` is the default configuration."""

    server: ServerConfig = _section(ServerConfig)
    storage: StorageConfig = _section(StorageConfig)
    auth: AuthConfig = _section(AuthConfig)
    logging: LoggingConfig = _section(LoggingConfig)
    retention_policies: tuple[RetentionPolicy, ...] = attrs.field(
        default=(), metadata={"list_of": RetentionPolicy})
    postgres: PostgresConfig = _section(PostgresConfig)
    query: QueryConfig = _section(QueryConfig)
    cluster: str | None = _field(None, _optional(_path), "cluster.toml of this node (docs/cluster.md)")

    def to_dict(self) -> dict:
        """A JSON-ready dict of every setting, without ``jwt_secret`` or passwords."""
        data = attrs.asdict(self)
        data["auth"].pop("jwt_secret", None)
        data["auth"]["users"] = [u["username"] for u in data["auth"]["users"]]
        data["retention_policies"] = [dict(rp) for rp in data["retention_policies"]]
        data["storage"]["wal_path"] = self.storage.wal_path
        return data


# --------------------------------------------------------------------------- building


def _build(cls: type, data: Any, path: str) -> Any:
    """Validate ``data`` (a mapping from YAML) into an instance of attrs class ``cls``."""
    label = path or "configuration"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys, got {data!r}", key=path or None)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key_path = f"{path}.{raw_key}" if path else str(raw_key)
        f = fields.get(raw_key) if isinstance(raw_key, str) else None
        if f is None:
            raise ConfigError(f"{key_path}: unknown key", key=key_path)
        kwargs[raw_key] = _convert(f, value, key_path)
    for f in fields.values():
        if f.name not in kwargs and f.default is None and "check" in f.metadata:
            try:
                f.metadata["check"](None, "")
            except ConfigError:
                key_path = f"{path}.{f.name}" if path else f.name
                raise ConfigError(f"{key_path}: required key missing", key=key_path) from None
    obj = cls(**kwargs)
    _cross_check(obj, path)
    return obj


def _convert(f: attrs.Attribute, value: Any, key_path: str) -> Any:
    meta = f.metadata
    if "section" in meta:
        return _build(meta["section"], value, key_path)
    if "list_of" in meta:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _fail(key_path, "a list", value)
        return tuple(_build(meta["list_of"], item, f"{key_path}[{i}]")
                     for i, item in enumerate(value))
    return meta["check"](value, key_path)


def _cross_check(obj: Any, path: str) -> None:
    """Rules that involve more than one key."""
    p = f"{path}." if path else ""
    if isinstance(obj, MemtableConfig) and obj.hard_limit_mb < obj.max_size_mb:
        raise ConfigError(f"{p}hard_limit_mb: must be >= max_size_mb ({obj.max_size_mb}), "
                          f"got {obj.hard_limit_mb}", key=f"{p}hard_limit_mb")
    if isinstance(obj, (PostgresConfig, ServerConfig)) and (obj.tls_cert is None) != (obj.tls_key is None):
        raise ConfigError(f"{p}tls_key: tls_cert and tls_key must be set together",
                          key=f"{p}tls_key")
    if isinstance(obj, RetentionPolicy) and obj.tier_after is not None \
            and obj.tier_after >= obj.duration:
        raise ConfigError(f"{p}tier_after: must be shorter than duration ({obj.duration}s), "
                          f"got {obj.tier_after}s", key=f"{p}tier_after")
    if isinstance(obj, PostgresConfig) and obj.require_tls and obj.tls_cert is None:
        raise ConfigError(f"{p}require_tls: needs tls_cert and tls_key", key=f"{p}require_tls")
    if isinstance(obj, AuthConfig):
        from rusts.security.tokens import check_config

        check_config(obj)  # with auth enabled: no default or short jwt_secret, a readable public key
        seen: set[str] = set()
        for i, u in enumerate(obj.users):
            if u.username in seen:
                raise ConfigError(f"{p}users[{i}].username: duplicate user {u.username!r}",
                                  key=f"{p}users[{i}].username")
            seen.add(u.username)
    if isinstance(obj, Config):
        names: set[str] = set()
        for i, rp in enumerate(obj.retention_policies):
            if rp.name in names:
                raise ConfigError(f"retention_policies[{i}].name: duplicate policy {rp.name!r}",
                                  key=f"retention_policies[{i}].name")
            names.add(rp.name)


_OVERRIDES = {
    "data_dir": ("storage", "data_dir"),
    "host": ("server", "host"),
    "port": ("server", "port"),
}


def config_from_dict(data: Any) -> Config:
    """Validate a parsed YAML document (a mapping, or None for an empty file) into a Config.

    Raises:
        ConfigError: Unknown key or bad value; the message starts with the key path.
    """
    return _build(Config, data, "")


def load_config(path: str | os.PathLike | None = None, *,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load and validate the configuration.

    Args:
        path: The YAML file. None means ``rusts.yml`` in the current directory if it exists,
            else the defaults. An explicit path that does not exist is an error.
        overrides: Command-line values ``data_dir``, ``host``, ``port``; None values are ignored.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Missing or unreadable file, YAML syntax error, unknown key or bad value.
    """
    import yaml

    if path is None:
        path = DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None
    data: Any = None
    if path is not None:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read configuration file: {exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" (line {mark.line + 1}, column {mark.column + 1})"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    config = config_from_dict(data)
    if overrides:
        for name, value in overrides.items():
            if name not in _OVERRIDES:
                raise ConfigError(f"{name}: unknown override", key=name)
            if value is None:
                continue
            section_name, key = _OVERRIDES[name]
            section = getattr(config, section_name)
            f = attrs.fields_dict(type(section))[key]
            value = f.metadata["check"](value, f"{section_name}.{key}")
            config = attrs.evolve(config, **{section_name: attrs.evolve(section, **{key: value})})
    return config


_DEFAULT_YAML = """\
# RusTs configuration. Every key is optional; the values below are the defaults.
# Reference: docs/configuration.md. Unknown keys and bad values stop the server.

server:
  host: 0.0.0.0
  port: 8086
  max_body_size: 10485760    # 10MB max request body (larger bodies get 413)
  request_timeout_secs: 30
  busy_poll_us: 2000         # Poll instead of sleeping this long after an answer (0 = off)
  max_line_bytes: 1048576    # Longer line-protocol lines are rejected (the error quotes 200 bytes)
  max_connections: 1000      # Open HTTP connections beyond this get 503 and are closed
  tls_cert: null             # PEM certificate file; set with tls_key to serve HTTPS
  tls_key: null

storage:
  data_dir: ./data
  wal_dir: null              # Defaults to data_dir/wal
  wal_durability: periodic   # every_write, periodic, os_default, none
  wal_sync_interval_ms: 100  # For periodic mode
  wal_retention_secs: 604800 # 7 days (null = forever for CDC)
  wal_segment_max_mb: 64     # Start a new WAL file beyond this size
  memtable:
    max_size_mb: 64          # Flush when the memtable reaches this size...
    max_points: 1000000      # ...or this many points...
    max_age_secs: 60         # ...or this age
    hard_limit_mb: 512       # Beyond this, writes get 503 until the flusher catches up
  partition_duration_hours: 24
  compression: default       # none, fast, default, best
  block_rows: 4096           # Points per column block in segments
  block_duration_secs: 3600  # Blocks never cross a multiple of this (0 = off): hourly aggregates need no decoding
  cold_after_hours: 24       # Partitions that ended longer ago than this go to the cold tier (null = never)...
  cold_idle_secs: 20         # ...once no flush has landed in them for this long
  max_series: 10000000       # Series in the database; writes creating more are rejected (null = no limit)
  max_series_per_measurement: 1000000  # Series per measurement (null = no limit)

auth:
  enabled: false
  jwt_secret: change-me-in-production  # With enabled: true, set >= 32 random bytes (openssl rand -hex 32)
  token_expiration_secs: 3600
  # [{username, password, scopes, measurements}] for POST /auth/token, basic auth and pgwire.
  # password: plain, SCRAM-SHA-256$..., $2b$... (bcrypt) or $argon2id$...; scopes: [read, write,
  # admin] (default all); measurements: [cpu, "mem*"] (default all). See docs/security.md.
  users: []
  jwt_public_key: null       # PEM public key file: also accept RS256/ES256/EdDSA tokens minted elsewhere
  jwt_audience: null         # When set, tokens must carry this aud (and minted tokens do)
  jwt_issuer: null           # When set, tokens must carry this iss (and minted tokens do)

logging:
  level: info                # trace, debug, info, warn, error
  show_target: true
  show_thread_ids: false
  show_location: false
  format: text               # text, json (one JSON object per line)

# Each policy: {name, measurement ("*" = all), duration ("30d", "12h", "90m", "3600s" or
# seconds), tier_after (optional, same format: move to the cold tier after this age)}
retention_policies: []

postgres:
  enabled: false
  host: 0.0.0.0
  port: 5432
  max_connections: 100
  tls_cert: null             # PEM certificate file; set with tls_key to enable TLS
  tls_key: null
  require_tls: false         # Refuse clients that do not negotiate TLS (needs tls_cert/tls_key)

query:
  max_concurrent: 16
  timeout_secs: 30
  max_rows: 10000000
  memory_limit_mb: 2048       # data one query may hold (scans, DuckDB's working memory); beyond: an error
  recent_cache_mb: 128        # flushed data kept in memory for queries over recent windows (0: off)

cluster: null                # this node's cluster.toml (docs/cluster.md); same as --cluster FILE
"""


def default_config_yaml() -> str:
    """The commented default configuration file (what ``--generate-config`` writes)."""
    return _DEFAULT_YAML
