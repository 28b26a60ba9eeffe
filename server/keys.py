"""The server's Ed25519 signing key (galleries, configs, event bundles), kept in the data dir."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from contract.auth import public_key_b64

logger = logging.getLogger(__name__)

KEY_FILE = "server_ed25519.pem"


@dataclass(frozen=True)
class ServerKey:
    """The private key, its base64 public half and the key id devices see."""

    private: Ed25519PrivateKey
    public_b64: str
    key_id: str


def load_or_create(key_dir: Path) -> ServerKey:
    """Load the key, creating it (mode 0600) on first start."""
    path = key_dir / KEY_FILE
    if path.exists():
        loaded = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        private = loaded
    else:
        key_dir.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        tmp.replace(path)
        logger.info("created server signing key %s", path)
    public = private.public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return ServerKey(private, public_key_b64(public), hashlib.sha256(raw).hexdigest()[:16])
