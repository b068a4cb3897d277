"""The TOML's `[store]` section: where the certificate set lives. `backend = "file"` (the
default: the lego layout under `<prefix>/.lego/`, exactly as for one node) or `"postgres"`
(fleet mode: several NJet nodes share one set through PostgreSQL; README "Fleet mode").

Used by config.py (`Config.store`) and app.py. The DSN comes from `dsn`, or `dsnFile` (a file
holding it, resolved against the NJet prefix: NJet starts its copilots with an empty
environment, so a password must be readable from a file), or `dsnEnv` (the name of an
environment variable), exactly one of them. `nodeName` defaults to `<host name>:<prefix>`, so
two nodes on one host differ. `encryptionKeyFile` (32 bytes) encrypts private keys at rest;
without it they are stored in clear, which the log and `diff` say. `leaseDuration` (default
60 s, at least 5 s) is how long a node's claim to order one certificate lasts without renewal;
`nodeTimeout` (default 2 min, at least 3 × the heartbeat of nodeTimeout/4) is how long a node
counts as live after its last heartbeat. Errors name the key, never a DSN's password.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from controller.config_sections import Duration
from controller.errors import ConfigError

DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_NODE_TIMEOUT = timedelta(minutes=2)
MIN_LEASE = timedelta(seconds=5)
MIN_NODE_TIMEOUT = timedelta(seconds=10)
_MAX_DSN_BYTES = 64 * 1024


class StoreSection(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    backend: Literal["file", "postgres"] = "file"
    dsn: str = ""
    dsnFile: str = ""
    dsnEnv: str = ""
    nodeName: str = ""
    encryptionKeyFile: str = ""
    leaseDuration: Duration = DEFAULT_LEASE
    nodeTimeout: Duration = DEFAULT_NODE_TIMEOUT

    @model_validator(mode="after")
    def _consistent(self) -> StoreSection:
        given = [k for k in ("dsn", "dsnFile", "dsnEnv") if getattr(self, k).strip()]
        if self.backend == "postgres" and len(given) != 1:
            raise ValueError('backend = "postgres" needs exactly one of dsn, dsnFile, dsnEnv'
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.backend == "file" and given:
            raise ValueError(f'{given[0]} is only used with backend = "postgres"')
        if self.leaseDuration < MIN_LEASE:
            raise ValueError("leaseDuration must be at least 5s")
        if self.nodeTimeout < MIN_NODE_TIMEOUT:
            raise ValueError("nodeTimeout must be at least 10s")
        if len(self.nodeName) > 200 or any(c in self.nodeName for c in "\r\n\t\0"):
            raise ValueError("nodeName must be one line of at most 200 characters")
        return self

    @property
    def fleet(self) -> bool:
        return self.backend == "postgres"

    def node_name(self, prefix: Path) -> str:
        """`nodeName`, else `<host name>:<prefix>`."""
        return self.nodeName.strip() or f"{os.uname().nodename}:{prefix}"

    def resolve_dsn(self, prefix: Path) -> str:
        """The DSN from dsn, dsnFile (relative to the prefix) or dsnEnv; ConfigError naming
        the key (and the file or variable), never the DSN itself."""
        if self.dsn.strip():
            return self.dsn.strip()
        if self.dsnFile.strip():
            path = Path(self.dsnFile.strip())
            path = path if path.is_absolute() else prefix / path
            try:
                with path.open("rb") as f:
                    raw = f.read(_MAX_DSN_BYTES + 1)
            except OSError as exc:
                raise ConfigError(f"[store] dsnFile {path}: {exc.strerror or exc}") from None
            if len(raw) > _MAX_DSN_BYTES:
                raise ConfigError(f"[store] dsnFile {path}: larger than 64 KiB")
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                raise ConfigError(f"[store] dsnFile {path} is empty")
            return text
        name = self.dsnEnv.strip()
        value = os.environ.get(name, "").strip()
        if not value:
            raise ConfigError(f"[store] dsnEnv: the environment variable {name} is not set "
                              "(NJet starts copilots with an empty environment: use dsnFile)")
        return value

    def key_file(self, prefix: Path) -> Path | None:
        value = self.encryptionKeyFile.strip()
        if not value:
            return None
        path = Path(value)
        return path if path.is_absolute() else prefix / path
