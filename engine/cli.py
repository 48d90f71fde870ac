"""``rusts-server``: parse the command line, load the configuration, start the server.

Flags follow the original: ``-c/--config``, ``-d/--data-dir``, ``-H/--host``, ``-p/--port``,
``--generate-config [PATH]``. Subcommands: ``rusts-server token create --subject S --scope read
--measurements cpu --expires 1h`` prints a signed token (the config's ``auth.jwt_secret``);
``rusts-server password [--scheme scram|bcrypt|argon2]`` prints a password hash for ``auth.users``
(the password is read from stdin). A configuration error prints one line
``rusts-server: config error: <message>`` on stderr and exits with status 2, never a traceback:
operators read that line, not a stack.
"""

from __future__ import annotations

import argparse
import os
import sys

from rusts.config import DEFAULT_CONFIG_PATH, default_config_yaml, load_config
from rusts.errors import ConfigError, RustsError

PROG = "rusts-server"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rusts")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(prog=PROG, description="RusTs time-series database server.",
                                epilog=f"Subcommands: '{PROG} token create --help' (mint an access token), "
                                       f"'{PROG} password --help' (hash a password for auth.users).")
    p.add_argument("-c", "--config", metavar="PATH", default=None,
                   help=f"configuration file (default: {DEFAULT_CONFIG_PATH} if present, "
                        "else built-in defaults)")
    p.add_argument("-d", "--data-dir", metavar="DIR", help="data directory (overrides config)")
    p.add_argument("-H", "--host", help="HTTP bind address (overrides config)")
    p.add_argument("-p", "--port", type=int, help="HTTP port (overrides config)")
    p.add_argument("--cluster", metavar="FILE", help="run as a cluster node described by FILE "
                   "(cluster.toml, docs/cluster.md); overrides the config's cluster key")
    p.add_argument("--generate-config", nargs="?", const=DEFAULT_CONFIG_PATH, metavar="PATH",
                   help=f"write the default configuration to PATH (default {DEFAULT_CONFIG_PATH}) "
                        "and exit")
    p.add_argument("--force", action="store_true",
                   help="with --generate-config: overwrite an existing file")
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    return p


def _generate(path: str, force: bool) -> int:
    if os.path.exists(path) and not force:
        print(f"{PROG}: {path} already exists (use --force to overwrite)", file=sys.stderr)
        return 1
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(default_config_yaml())
    except OSError as exc:
        print(f"{PROG}: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote default configuration to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rusts-server``.

    Returns:
        The process exit status: 0 ok, 1 runtime error, 2 usage or configuration error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["token"]:
        return _token(argv[1:])
    if argv[:1] == ["password"]:
        return _password(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if args.generate_config is not None:
        return _generate(args.generate_config, args.force)
    try:
        config = load_config(args.config, overrides={
            "data_dir": args.data_dir, "host": args.host, "port": args.port})
        if args.cluster or config.cluster:
            import attrs
            from rusts.cluster.config import check_node_config

            config = attrs.evolve(config, cluster=args.cluster or config.cluster)
            check_node_config(config)  # a bad cluster.toml stops here, naming the key
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return 2

    from rusts.logsetup import configure_logging

    configure_logging(config.logging)
    try:
        from rusts import server

        return int(server.run(config) or 0)
    except (RustsError, KeyboardInterrupt, BaseExceptionGroup) as exc:
        leaves = _leaves(exc)
        if all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return 130
        known = [e for e in leaves if isinstance(e, RustsError)]
        if not known or len(known) + sum(isinstance(e, KeyboardInterrupt) for e in leaves) \
                != len(leaves):
            raise  # a bug: the traceback is the useful output
        first = known[0]
        if isinstance(first, ConfigError):
            print(f"{PROG}: config error: {first}", file=sys.stderr)
            return 2
        print(f"{PROG}: error: {first}", file=sys.stderr)
        return 1


def _token(argv: list[str]) -> int:
    """``rusts-server token create ...``: print a token signed with the config's secret."""
    from rusts.config import parse_duration
    from rusts.security import tokens
    from rusts.security.scopes import parse_measurements, parse_scopes

    p = argparse.ArgumentParser(prog=f"{PROG} token", description="Mint an access token (JWT, HS256).")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="print a new token")
    c.add_argument("-c", "--config", metavar="PATH", default=None, help="configuration file (its auth.jwt_secret)")
    c.add_argument("--subject", required=True, help="who the token speaks for (the sub claim)")
    c.add_argument("--scope", action="append", required=True,
                   help="read, write or admin (repeat, or comma-separate, for several)")
    c.add_argument("--measurements", default=None, help="limit to these measurements: cpu,mem or prefixes cpu*")
    c.add_argument("--expires", default="1h", help="lifetime: 3600, 90m, 12h, 30d (default 1h)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = load_config(args.config)
        scopes = parse_scopes(",".join(args.scope), "--scope")
        ms = parse_measurements(args.measurements, "--measurements")
        secs = parse_duration(args.expires, "--expires")
        auth = config.auth
        if auth.jwt_secret == tokens.DEFAULT_SECRET or len(auth.jwt_secret.encode()) < tokens.MIN_SECRET_BYTES:
            raise ConfigError("auth.jwt_secret: set a secret of at least 32 bytes before minting tokens",
                              key="auth.jwt_secret")
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(tokens.mint(auth, args.subject, scopes, ms, secs)["token"])
    return 0


def _password(argv: list[str]) -> int:
    """``rusts-server password``: print a hash of the password read from stdin."""
    p = argparse.ArgumentParser(prog=f"{PROG} password",
                                description="Hash a password (read from stdin) for auth.users.")
    p.add_argument("--scheme", choices=("scram", "bcrypt", "argon2"), default="scram",
                   help="scram (default: pgwire SCRAM logins keep working), bcrypt or argon2")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print(f"{PROG}: error: empty password on stdin", file=sys.stderr)
        return 2
    if args.scheme == "scram":
        from rusts.security.passwords import scram_verifier

        print(scram_verifier(password))
    elif args.scheme == "bcrypt":
        import bcrypt

        print(bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt()).decode())
    else:
        from argon2 import PasswordHasher

        print(PasswordHasher().hash(password))
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (trio nurseries wrap errors in groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
