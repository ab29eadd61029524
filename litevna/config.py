"""One validated, frozen configuration object (SPEC §1). No I/O here."""

import os
import re
import socket
from urllib.parse import urlsplit
from dataclasses import dataclass

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000 ** 2, "MB": 1000 ** 2,
          "MIB": 1024 ** 2, "G": 1000 ** 3, "GB": 1000 ** 3, "GIB": 1024 ** 3,
          "T": 1000 ** 4, "TB": 1000 ** 4, "TIB": 1024 ** 4}

#: (option, default, help) — every option also reads LITEVNA_<OPTION> from the environment.
OPTIONS = (
    ("listen", "tcp:8080:interface=127.0.0.1", "Twisted endpoint string to listen on"),
    ("data-dir", "./litevna-data", "blobs, SQLite index, signing keys, pending uploads"),
    ("database", None, "index database: SQLite file path or postgresql://... (default: in data dir)"),
    ("redis", None, "redis://host:port/db for the shared cache and revocation list"),
    ("public-url", None, "base URL for RetrieveURL, BulkDataURI and upload URLs"),
    ("workers", "1", "server processes sharing the listening socket"),
    ("max-body", "512MiB", "largest direct STOW body"),
    ("max-upload", "20GiB", "largest presigned upload"),
    ("on-duplicate", "reject", "same SOP Instance UID with different bytes: reject or replace"),
    ("cors-origins", "*", "allowed browser origins (comma-separated)"),
    ("log-format", "text", "text or json"),
    ("cache-size", "64MiB", "in-process cache of metadata and search answers (0 disables)"),
)


def parse_redis_url(url):
    """(host, port, db, password) of ``redis://[:password@]host[:port][/db]``."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"not a redis://host:port/db URL: {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the Redis database is a number: {url!r}")
    return parts.hostname, parts.port or 6379, int(path or 0), parts.password


def is_postgres_url(database):
    """True if --database names a PostgreSQL database rather than an SQLite file."""
    return urlsplit(database).scheme in ("postgresql", "postgres")


class ConfigError(ValueError):
    """An option value that makes no sense."""


def env_default(option, default):
    """The environment's value for option (LITEVNA_DATA_DIR for data-dir), else default."""
    return os.environ.get("LITEVNA_" + option.upper().replace("-", "_"), default)


def parse_size(text):
    """Bytes from '512MiB', '20GiB', '1000000'."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"not a size: {text!r}")
    number, unit = match.groups()
    unit = (unit or "").upper()
    if unit not in _UNITS:
        raise ConfigError(f"unknown size unit in {text!r}")
    return int(float(number) * _UNITS[unit])


@dataclass(frozen=True)
class Config:
    listen: str
    data_dir: str
    database: str
    redis: str | None
    public_url: str | None
    workers: int
    max_body: int
    max_upload: int
    on_duplicate: str
    cors_origins: tuple
    log_format: str
    cache_size: int = 64 << 20
    worker: int | None = None  # set in a --workers child: its number

    @classmethod
    def from_options(cls, options):
        """Build from a mapping of option name → string value (None = default)."""
        value = {name: options.get(name) if options.get(name) is not None else default
                 for name, default, _ in OPTIONS}
        data_dir = os.path.abspath(value["data-dir"])
        database = value["database"] or os.path.join(data_dir, "index.sqlite3")
        if "://" in database and not is_postgres_url(database):
            raise ConfigError("--database is an SQLite file path or a postgresql:// URL")
        if value["on-duplicate"] not in ("reject", "replace"):
            raise ConfigError("--on-duplicate is reject or replace")
        if value["log-format"] not in ("text", "json"):
            raise ConfigError("--log-format is text or json")
        try:
            workers = int(value["workers"])
        except ValueError:
            raise ConfigError("--workers is a whole number") from None
        if workers < 1:
            raise ConfigError("--workers is at least 1")
        if workers > 1 and value["listen"].split(":", 1)[0] not in ("tcp", "tcp6"):
            raise ConfigError("--workers shares a tcp: or tcp6: --listen endpoint")
        if value["redis"]:
            try:
                parse_redis_url(value["redis"])
            except ValueError as exc:
                raise ConfigError(f"--redis: {exc}") from None
        public_url = value["public-url"].rstrip("/") if value["public-url"] else None
        return cls(
            listen=value["listen"], data_dir=data_dir, database=database,
            redis=value["redis"], public_url=public_url, workers=workers,
            max_body=parse_size(value["max-body"]), max_upload=parse_size(value["max-upload"]),
            on_duplicate=value["on-duplicate"],
            cors_origins=tuple(o.strip() for o in value["cors-origins"].split(",") if o.strip()),
            log_format=value["log-format"], cache_size=parse_size(value["cache-size"]),
        )

    def worker_arguments(self):
        """The serve options that give a --workers child this same config, one process."""
        args = ["--listen", self.listen, "--data-dir", self.data_dir, "--database", self.database,
                "--workers", "1", "--max-body", str(self.max_body),
                "--max-upload", str(self.max_upload), "--on-duplicate", self.on_duplicate,
                "--cors-origins", ",".join(self.cors_origins), "--log-format", self.log_format,
                "--cache-size", str(self.cache_size)]
        if self.redis:
            args += ["--redis", self.redis]
        if self.public_url:
            args += ["--public-url", self.public_url]
        return args

    @property
    def blob_dir(self):
        return os.path.join(self.data_dir, "blobs")

    @property
    def staging_dir(self):
        # Per host and worker: nodes and workers sharing a data dir must not clear each
        # other's uploads when one (re)starts.
        folder = os.path.join(self.data_dir, "staging", socket.gethostname())
        return folder if self.worker is None else os.path.join(folder, f"worker-{self.worker}")

    @property
    def upload_dir(self):
        # Shared by every worker and node: a PUT may reach one and the claim another.
        return os.path.join(self.data_dir, "uploads")

    @property
    def key_dir(self):
        return os.path.join(self.data_dir, "keys")
