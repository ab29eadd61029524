"""The server's signing keys and the compact JWS values signed with them.

Keys are Ed25519 (EdDSA, RFC 8037) kept as PEM files (mode 0600) in
``<data-dir>/keys``; every value names its key in the ``kid`` header, so a new
key can be added and old values still verify until they expire.
"""

import hashlib
import os

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "EdDSA"


class InvalidToken(Exception):
    """A value that is not a valid signed value of this server (401)."""


class TokenExpired(InvalidToken):
    """A value this server signed whose ``exp`` has passed (401)."""


def _key_id(private_key):
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Keyring:
    """The signing keys found in a folder; the newest one signs."""

    def __init__(self, folder):
        self.folder = folder
        self._private = {}
        self._public = {}
        self._signing = None
        self.load()

    def load(self):
        """Read the folder, creating a first key if it holds none."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        names = sorted(n for n in os.listdir(self.folder) if n.endswith(".pem"))
        if not names:
            names = [self._create()]
        for name in names:
            with open(os.path.join(self.folder, name), "rb") as fp:
                key = serialization.load_pem_private_key(fp.read(), password=None)
            kid = _key_id(key)
            self._private[kid] = key
            self._public[kid] = key.public_key()
        self._signing = _key_id(serialization.load_pem_private_key(
            open(os.path.join(self.folder, names[-1]), "rb").read(), password=None))

    def _create(self):
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        name = f"{len(os.listdir(self.folder)):04d}-{_key_id(key)}.pem"
        path = os.path.join(self.folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fp:
            fp.write(pem)
        return name

    def sign(self, claims):
        """A compact JWS of claims, signed by the newest key."""
        return jwt.encode(claims, self._private[self._signing], algorithm=ALGORITHM,
                          headers={"kid": self._signing})

    def verify(self, value, now):
        """The claims of a value this keyring signed; InvalidToken otherwise."""
        try:
            header = jwt.get_unverified_header(value)
            public = self._public.get(header.get("kid"))
            if public is None or header.get("alg") != ALGORITHM:
                raise InvalidToken("signed by an unknown key")
            claims = jwt.decode(value, public, algorithms=[ALGORITHM],
                                options={"verify_exp": False, "require": ["typ", "store"]})
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"not a valid token: {exc}") from None
        exp = claims.get("exp")
        if exp is not None and now >= exp:
            raise TokenExpired("the token has expired")
        return claims
