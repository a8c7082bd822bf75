"""The private half of each signing key, on local disk, never in Redis.

`KeyStore(directory)` keeps one PEM file per kid (`<kid>.pem`, PKCS#8, unencrypted) in a
directory only its owner can enter. Redis only ever sees the public JWK that `generate`
returns. The permissions are part of the contract and are checked, not assumed:

- the directory is created with mode 0700; an existing one must belong to the current user
  and give nothing to group or others, else `InsecureKeyStore` (fix it with
  `chmod 700 DIR`, or `chown` it to the user that signs);
- each key file is created with mode 0600 (`O_EXCL`: an existing file is never
  overwritten) and, when read, must be a regular file (not a symlink) that belongs to the
  current user and gives nothing to group or others, else `InsecureKeyStore`;
- a kid names a file only if it is made of letters, digits, `.`, `_` and `-` and does not
  start with a dot (`InvalidKid` otherwise): a kid from a token or from Redis can never
  reach outside the directory.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Iterable, List, Optional, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = ["ALGORITHMS", "InsecureKeyStore", "InvalidKid", "KeyStore", "KeyStoreError"]

#: The algorithms `KeyStore.generate` makes keys for, and the key each one gets.
ALGORITHMS = {
    "ES256": "EC P-256",
    "ES384": "EC P-384",
    "ES512": "EC P-521",
    "RS256": "RSA (rsa_bits, 2048 by default)",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "EdDSA": "OKP Ed25519",
}

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_KID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class KeyStoreError(Exception):
    """A KeyStore problem (the base of the two below)."""


class InsecureKeyStore(KeyStoreError):
    """The directory or a key file is not private to the current user (owner, mode, or a
    symlink where a file should be): the store refuses to use it."""


class InvalidKid(KeyStoreError, ValueError):
    """A kid that cannot name a file in the store (see the module docstring)."""


def _check_private(st: os.stat_result, what: str, mode_hint: str) -> None:
    if st.st_uid != os.geteuid():
        raise InsecureKeyStore(
            f"{what} belongs to uid {st.st_uid}, not to the user signing (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise InsecureKeyStore(
            f"{what} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may access it "
            f"(chmod {mode_hint})")


class KeyStore:
    """Private signing keys in `directory`, one PEM file per kid (`<kid>.pem`, PKCS#8).

    Creates the directory (and its parents) with mode 0700; refuses with
    `InsecureKeyStore` a directory or key file that is a symlink, belongs to another user
    or gives group or others any access (checked at construction and on every use). Key
    files are created 0600 and never overwritten. A kid must be letters, digits, `.`, `_`
    and `-`, not starting with a dot (`InvalidKid`)."""

    def __init__(self, directory: Union[str, os.PathLike]):
        self.dir = Path(directory)
        try:
            os.mkdir(self.dir, 0o700)
            os.chmod(self.dir, 0o700)  # whatever the umask did
        except FileExistsError:
            pass
        except FileNotFoundError:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.dir, 0o700)
            os.chmod(self.dir, 0o700)
        self.check()

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        """Raises InsecureKeyStore unless the directory is a real directory (not a symlink)
        owned by the current user with no access for group or others."""
        st = os.lstat(self.dir)
        if not stat.S_ISDIR(st.st_mode):
            raise InsecureKeyStore(f"{self.dir} is not a directory (or is a symlink)")
        _check_private(st, str(self.dir), f"700 {self.dir}")

    def path(self, kid: str) -> Path:
        """The file of `kid` (InvalidKid if the kid cannot name a file)."""
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise InvalidKid(f"kid {kid!r} cannot name a key file")
        return self.dir / f"{kid}.pem"

    # ------------------------------------------------------------------ keys

    def generate(self, alg: str = "ES256", *, kid: Optional[str] = None,
                 rsa_bits: int = 2048) -> dict:
        """Makes a key pair for `alg` (one of ALGORITHMS), writes the private key here
        (mode 0600, never overwriting) and returns the public JWK, with `kid`, `use: sig`
        and `alg`, ready for `Add`. The kid defaults to the UTC time and 8 random hex
        digits (`20261206T210000-1a2b3c4d`), so kids sort by creation."""
        if alg in _CURVES:
            private: Any = ec.generate_private_key(_CURVES[alg]())
            public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        elif alg.startswith(("RS", "PS")) and alg in ALGORITHMS:
            private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
            public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
            public = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
        else:
            raise ValueError(f"unsupported alg {alg!r} (one of {', '.join(ALGORITHMS)})")
        kid = kid or time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
        path = self.path(kid)
        self.check()
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        public.pop("key_ops", None)
        public.update({"kid": kid, "use": "sig", "alg": alg})
        return public

    def private_key(self, kid: str) -> Any:
        """The private key of `kid` (a `cryptography` key object, as `jwt.encode` takes
        it). FileNotFoundError if this store has none; InsecureKeyStore if the directory or
        the file is not private to the current user."""
        path = self.path(kid)
        self.check()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InsecureKeyStore(f"{path} is not a regular file")
            _check_private(st, str(path), f"600 {path}")
            with os.fdopen(fd, "rb") as f:
                fd = -1
                data = f.read()
        finally:
            if fd != -1:
                os.close(fd)
        return serialization.load_pem_private_key(data, password=None)

    def public_jwk(self, kid: str, alg: str) -> dict:
        """The public JWK of a stored key (as `generate` returned it)."""
        key = self.private_key(kid).public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            jwk = json.loads(ECAlgorithm.to_jwk(key))
        elif isinstance(key, rsa.RSAPublicKey):
            jwk = json.loads(RSAAlgorithm.to_jwk(key))
        else:
            jwk = json.loads(OKPAlgorithm.to_jwk(key))
        jwk.pop("key_ops", None)
        jwk.update({"kid": kid, "use": "sig", "alg": alg})
        return jwk

    def kids(self) -> List[str]:
        """The kids this store holds a private key for, sorted."""
        return sorted(p.stem for p in self.dir.glob("*.pem") if _KID.fullmatch(p.stem))

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and _KID.fullmatch(kid) is not None and \
            self.path(kid).exists()

    def delete(self, kid: str) -> bool:
        """Deletes the private key of `kid`; True if there was one."""
        try:
            self.path(kid).unlink()
            return True
        except FileNotFoundError:
            return False

    def prune(self, keep: Iterable[str], older_than_s: float) -> List[str]:
        """Deletes the private keys of kids not in `keep` (retired, or generated and never
        published) once their file is older than `older_than_s`: a retired key can no longer
        sign anything. Returns the kids deleted."""
        keep = set(keep)
        now = time.time()
        gone = []
        for kid in self.kids():
            path = self.path(kid)
            try:
                if kid not in keep and now - path.stat().st_mtime > older_than_s:
                    path.unlink(missing_ok=True)
                    gone.append(kid)
            except FileNotFoundError:
                pass
        return gone
