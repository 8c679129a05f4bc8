"""Operator configuration: the `FINPASS_*` variables of CONTRACT.md §4 (and a `.env` file).

Settings are built once, at the edge (the CLI), and passed down. A bad value is a
`ValidationError`; `describe_settings_error` turns it into the one line the CLI prints before
exiting 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from finpass_pipeline.errors import UsageError
from finpass_pipeline.privacy.crypto import (
    DEV_MASTER_KEY,
    DEV_MASTER_KEY_ID,
    MasterKeyring,
    parse_key,
)

if TYPE_CHECKING:
    from finpass_pipeline.audit.note import Signer

DEV_AUDIT_HASH_KEY = "finpass-dev-only-insecure-audit-key"
"""Used for `user_id_hash` only when `FINPASS_DEV_MODE=true` and no key is configured."""


class Settings(BaseSettings):
    """Everything the pipeline reads from its environment. Frozen: pass it down, never mutate."""

    model_config = SettingsConfigDict(
        env_prefix="FINPASS_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "postgresql://postgres@127.0.0.1:5432/finpass"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "finpass."
    consumer_group: str = Field(default="finpass-pipeline", min_length=1, max_length=255)
    audit_hash_key: SecretStr | None = None
    audit_hash_key_id: str = Field(default="k1", min_length=1, max_length=32)
    max_consecutive_dead_letters: int = Field(default=100, ge=1)
    http_port: int = Field(default=9464, ge=0, le=65535)

    # Additions to the contract (documented in docs/design.md, "Contract additions").
    dev_mode: bool = False
    batch_max_events: int = Field(default=2000, ge=1, le=100_000)
    consumer_lanes: int = Field(default=1, ge=1, le=16)
    """Concurrent transactions per poll batch, split by partition (consumers/lanes.py)."""
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    topic_replication_factor: int = Field(default=1, ge=1, le=32)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = Field(default="info", pattern="^(?i)(debug|info|warning|error)$")
    event_loop: str = Field(default="uvloop", pattern="^(uvloop|asyncio)$")
    """The consumer daemon's event loop: uvloop (libuv; less CPU per batch, docs/performance.md)
    or the standard library's."""

    # The audit log you can prove (docs/audit.md).
    database_role: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
    """When set, every pipeline connection runs as this role (e.g. `finpass_writer`)."""
    audit_chain: bool = True
    """Hash-chain the audit rows; false writes them with NULL chain columns (to measure)."""
    audit_hash_keys: SecretStr | None = None
    """Older pseudonym keys, `id1:secret1,id2:secret2`, kept for `audit user` look-ups."""
    audit_checkpoint_key: SecretStr | None = None
    """HMAC-SHA-256 key that signs `audit checkpoint --hmac` files (the v1 checkpoints)."""
    audit_signing_key: Path | None = None
    """PKCS#8 PEM Ed25519 private key that signs the tree's checkpoints (signed notes)."""
    audit_origin: str = Field(default="finpass-pipeline/audit", pattern=r"^[^\s+]{1,200}$")
    """The checkpoints' origin line, which is also the signing key's note name."""
    audit_sealer: Literal["process", "task", "off"] = "process"
    """How the consumer daemon runs the Merkle sealer: a child process (default: ingest keeps
    its CPU), a task in its event loop, or not at all (`audit seal` then seals); true/false
    mean process/off."""
    audit_seal_every_s: float = Field(default=1.0, gt=0, le=3600)
    """How often the daemon's sealer looks for committed rows to seal."""
    audit_checkpoint_every_s: float | None = Field(default=None, gt=0)
    """When set, the daemon signs and records a checkpoint this often (needs a signing key)."""

    # Personal data at rest (docs/privacy.md).
    pii_master_key: SecretStr | None = None
    """The master key (32 bytes, base64 or hex) that wraps every person's data key."""
    pii_master_key_id: str = Field(default="m1", min_length=1, max_length=32,
                                   pattern=r"^[A-Za-z0-9._-]+$")
    pii_master_keys: SecretStr | None = None
    """Older master keys, `id1:key1,id2:key2`: they still unwrap until `privacy rotate-key`."""

    # The transactional outbox (producers/outbox.py).
    outbox_database_url: str | None = None
    """The database holding `event_outbox` when it is not the pipeline's own."""

    # Lifecycle jobs the consume daemon runs by itself (docs/operations.md, "Scheduled jobs").
    # Seconds between runs across the whole consumer group; 0 (the default) leaves a job off.
    schedule_audit_retention_seconds: int = Field(default=0, ge=0, le=366 * 86400)
    """`audit retention` (drop whole audit partitions past retention) every N seconds."""
    schedule_prune_seconds: int = Field(default=0, ge=0, le=366 * 86400)
    """`prune` (idempotency claims older than `schedule_prune_older_than`) every N seconds."""
    schedule_prune_older_than: str = Field(default="30d", pattern=r"^\s*[1-9]\d*[dhm]\s*$")
    """The scheduled prune's window, as `prune --older-than` (30d, 12h, 90m)."""

    @field_validator("database_role", mode="before")
    @classmethod
    def _empty_role_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("audit_signing_key", "audit_checkpoint_every_s", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("audit_sealer", mode="before")
    @classmethod
    def _sealer_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            return "process" if value else "off"
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return "process"
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return "off"
        return value

    @field_validator("outbox_database_url", mode="before")
    @classmethod
    def _empty_outbox_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url", "outbox_database_url")
    @classmethod
    def _dsn_is_postgres(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must start with postgresql:// (e.g. postgresql://user@host:5432/db)")
        try:
            _ = parts.port  # raises on a non-numeric port
        except ValueError as e:
            raise ValueError(f"has a bad port: {e}") from None
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("names no host")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_is_host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port (comma-separated list)")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed or len(value) > 200:
            raise ValueError("may contain only letters, digits, '.', '_' and '-'")
        return value

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",")]

    def topic(self, name: str) -> str:
        """`topic("payments")` → `finpass.payments` under the configured prefix."""
        return f"{self.topic_prefix}{name}"

    def outbox_dsn(self) -> str:
        """The outbox database: `FINPASS_OUTBOX_DATABASE_URL`, else `FINPASS_DATABASE_URL`."""
        return self.outbox_database_url or self.database_url

    def hash_key(self) -> bytes:
        """The audit pseudonym key; outside dev mode a missing key is a configuration error."""
        if self.audit_hash_key is not None and self.audit_hash_key.get_secret_value():
            return self.audit_hash_key.get_secret_value().encode()
        if self.dev_mode:
            return DEV_AUDIT_HASH_KEY.encode()
        raise ConfigError(
            "FINPASS_AUDIT_HASH_KEY is not set (required unless FINPASS_DEV_MODE=true)"
        )


    def hash_keys(self) -> dict[str, bytes]:
        """Every pseudonym key by id: `FINPASS_AUDIT_HASH_KEYS` plus the current key.

        Raises `ConfigError` (never echoing a secret) on a malformed list or when an id is given
        two different secrets.
        """
        keys: dict[str, bytes] = {}
        raw = self.audit_hash_keys.get_secret_value() if self.audit_hash_keys else ""
        for n, item in enumerate((i.strip() for i in raw.split(",") if i.strip()), start=1):
            key_id, sep, secret = item.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id or not secret or len(key_id) > 32:
                raise ConfigError(f"FINPASS_AUDIT_HASH_KEYS: entry {n} is not id:secret "
                                  "(comma-separated, id at most 32 characters)")
            if keys.get(key_id, secret.encode()) != secret.encode():
                raise ConfigError(f"FINPASS_AUDIT_HASH_KEYS: key id {key_id!r} has two secrets")
            keys[key_id] = secret.encode()
        current = self.hash_key()
        if keys.get(self.audit_hash_key_id, current) != current:
            raise ConfigError(f"FINPASS_AUDIT_HASH_KEYS gives key id {self.audit_hash_key_id!r} "
                              "a different secret than FINPASS_AUDIT_HASH_KEY")
        keys[self.audit_hash_key_id] = current
        return keys

    def pii_keyring(self) -> MasterKeyring:
        """The master keyring. Outside dev mode a missing key is a configuration error; in dev
        mode the dev key is used and a notice says so on stderr (once per process)."""
        older = _older_pii_keys(self.pii_master_keys.get_secret_value()
                                if self.pii_master_keys else "")
        current = self.pii_master_key.get_secret_value() if self.pii_master_key else ""
        if current:
            key = _pii_key(current, "FINPASS_PII_MASTER_KEY")
            if older.get(self.pii_master_key_id, key) != key:
                raise ConfigError(f"FINPASS_PII_MASTER_KEYS gives key id "
                                  f"{self.pii_master_key_id!r} another key than "
                                  "FINPASS_PII_MASTER_KEY")
            return MasterKeyring(self.pii_master_key_id, {**older, self.pii_master_key_id: key})
        if not self.dev_mode:
            raise ConfigError(
                "FINPASS_PII_MASTER_KEY is not set (required unless FINPASS_DEV_MODE=true)")
        _dev_key_notice()
        return MasterKeyring(DEV_MASTER_KEY_ID, {**older, DEV_MASTER_KEY_ID: DEV_MASTER_KEY},
                             dev=True)

    def checkpoint_key(self) -> bytes:
        """The key that signs audit checkpoints; a missing key is a configuration error."""
        if self.audit_checkpoint_key is not None and self.audit_checkpoint_key.get_secret_value():
            return self.audit_checkpoint_key.get_secret_value().encode()
        raise ConfigError("FINPASS_AUDIT_CHECKPOINT_KEY is not set (it signs audit checkpoints)")


    def signer(self) -> Signer:
        """The checkpoint signer (FINPASS_AUDIT_SIGNING_KEY, else the dev key in dev mode);
        `ConfigError` when neither. `signer().dev` says the dev key is in use."""
        from finpass_pipeline.audit.note import NoteError, load_signer

        try:
            return load_signer(self.audit_origin, self.audit_signing_key, self.dev_mode)
        except NoteError as e:
            raise ConfigError(str(e)) from None


def _pii_key(text: str, name: str) -> bytes:
    try:
        return parse_key(text, name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _older_pii_keys(raw: str) -> dict[str, bytes]:
    """`FINPASS_PII_MASTER_KEYS`: `id:key,...` (never echoing a key)."""
    keys: dict[str, bytes] = {}
    for n, item in enumerate((i.strip() for i in raw.split(",") if i.strip()), start=1):
        key_id, sep, secret = item.partition(":")
        if not sep or not key_id.strip() or len(key_id.strip()) > 32:
            raise ConfigError(f"FINPASS_PII_MASTER_KEYS: entry {n} is not id:key "
                              "(comma-separated, id at most 32 characters)")
        keys[key_id.strip()] = _pii_key(secret, f"FINPASS_PII_MASTER_KEYS entry {n}")
    return keys


@functools.cache
def _dev_key_notice() -> None:
    print("finpass-pipeline: using the dev PII master key (FINPASS_DEV_MODE=true): personal "
          "data is NOT protected; set FINPASS_PII_MASTER_KEY outside development",
          file=sys.stderr, flush=True)


class ConfigError(UsageError):
    """Bad configuration: the CLI prints the message on one line and exits 2."""


def describe_settings_error(error: ValidationError) -> str:
    """One line naming the first bad variable, e.g. `FINPASS_HTTP_PORT: ...`."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    return f"FINPASS_{field.upper()}: {first['msg']} (got {first.get('input')!r})"


def load_settings() -> Settings:
    """Build settings from the environment; raises `ConfigError` with a one-line reason."""
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError(describe_settings_error(e)) from None
