"""Private signing keys live here, outside Redis: one PEM file per kid, mode 0600.
Redis only ever sees the public JWK."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


class KeyStore:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def generate(self) -> dict:
        """A new P-256 key pair: the private key is written here; the public JWK returned."""
        kid = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
        private = ec.generate_private_key(ec.SECP256R1())
        path = self.dir / f"{kid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
        public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        public.update({"kid": kid, "use": "sig", "alg": "ES256"})
        return public

    def prune(self, keep, older_than_s: float) -> list:
        """Deletes the private keys of kids not in `keep` (retired, or generated and never
        published) once their file is older than `older_than_s`: a retired key can no longer
        sign anything. Returns the kids deleted."""
        keep = set(keep)
        now = time.time()
        gone = []
        for path in self.dir.glob("*.pem"):
            kid = path.stem
            if kid not in keep and now - path.stat().st_mtime > older_than_s:
                path.unlink(missing_ok=True)
                gone.append(kid)
        return gone

    def private_key(self, kid: str):
        with open(self.dir / f"{kid}.pem", "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
