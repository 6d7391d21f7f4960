"""ZeroMQ CURVE keys for TCP links between gateways and workers.

Key files use ZeroMQ's certificate format (what `zmq.auth.load_certificate` reads): `NAME.key`
holds the public and the secret key (mode 0600), `NAME.pub` only the public one. Workers are CURVE
servers and accept the gateways whose `.pub` files are in an authorized folder; gateways are CURVE
clients that know the workers' public key. `ipc://` links stay on one host and use no keys.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import zmq
import zmq.auth

log = logging.getLogger("herd.curve")


class CurveKeyError(Exception):
    """A key file or folder that is missing or unreadable: a configuration error."""


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def _key_text(public: bytes, secret: bytes | None) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"#   ****  Generated on {stamp} by herd keygen  ****", "metadata", "curve",
             f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def keygen(path: str) -> tuple[str, str]:
    """Writes PATH.key (secret, created 0600 so it is never readable by others) and PATH.pub."""
    public, secret = zmq.curve_keypair()
    secret_path, public_path = f"{path}.key", f"{path}.pub"
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_key_text(public, secret))
    with open(public_path, "w") as f:
        f.write(_key_text(public, None))
    return secret_path, public_path


def load_keypair(path: str) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"cannot read the CURVE key {path}: {e}") from e
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key (use the .key file of `herd keygen`)")
    return public, secret


def load_public(path: str) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"cannot read the CURVE public key {path}: {e}") from e
    return public


class AuthorizedKeys:
    """The gateways' public keys in a folder of `.pub` files, re-read when the folder changes,
    so adding or revoking a gateway needs no worker restart."""

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise CurveKeyError(f"HERD_CURVE_AUTHORIZED={folder} is not a folder")
        self.folder = folder
        self._stamp: tuple[float, int] | None = None
        self._keys: set[bytes] = set()

    def keys(self) -> set[bytes]:
        st = os.stat(self.folder)
        stamp = (st.st_mtime, st.st_nlink)
        if stamp != self._stamp:
            keys = set()
            for name in sorted(os.listdir(self.folder)):
                if name.endswith(".pub"):
                    try:
                        keys.add(load_public(os.path.join(self.folder, name)))
                    except CurveKeyError as e:
                        log.warning("%s", e)
            self._keys, self._stamp = keys, stamp
        return self._keys

    def callback(self, domain: str, key: bytes) -> bool:  # zmq.auth's credentials provider
        allowed = key in self.keys()
        if not allowed:
            log.warning("refused a peer whose CURVE key is not authorized: %s", key.decode())
        return allowed


@dataclass(frozen=True)
class ServerKeys:
    """A worker's side: its key pair and who may connect."""

    public: bytes
    secret: bytes
    authorized: AuthorizedKeys
    secret_path: str
    authorized_dir: str

    @classmethod
    def load(cls, secret_path: str, authorized_dir: str) -> ServerKeys | None:
        if not secret_path and not authorized_dir:
            return None
        if not secret_path or not authorized_dir:
            raise CurveKeyError("a worker needs both HERD_CURVE_SECRET_KEY and HERD_CURVE_AUTHORIZED")
        public, secret = load_keypair(secret_path)
        return cls(public, secret, AuthorizedKeys(authorized_dir), secret_path, authorized_dir)

    def start_authenticator(self, ctx: zmq.Context, asyncio: bool) -> object:
        """One ZAP handler per context checks every CURVE handshake of its sockets."""
        if asyncio:
            from zmq.auth.asyncio import AsyncioAuthenticator
            auth: object = AsyncioAuthenticator(ctx)
        else:
            from zmq.auth.thread import ThreadAuthenticator
            auth = ThreadAuthenticator(ctx)
        auth.start()  # type: ignore[attr-defined]
        auth.configure_curve_callback("*", self.authorized)  # type: ignore[attr-defined]
        return auth

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


@dataclass(frozen=True)
class ClientKeys:
    """A gateway's side: its key pair and the workers' public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def load(cls, secret_path: str, server_path: str) -> ClientKeys | None:
        if not secret_path and not server_path:
            return None
        if not secret_path or not server_path:
            raise CurveKeyError("a gateway needs both HERD_CURVE_SECRET_KEY and HERD_CURVE_SERVER_KEY")
        public, secret = load_keypair(secret_path)
        return cls(public, secret, load_public(server_path))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server
