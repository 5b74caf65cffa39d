"""OIDC ID tokens signed by a local RSA key, and a loopback HTTP endpoint for its certificate.

Tokens look like Google's service-account ID tokens (RS256, ``kid`` header, ``aud``,
``azp``, ``email``, ``email_verified``, ``sub``, ``iat``, ``exp``, ``iss``), so
``google.oauth2.id_token.verify_token(..., certs_url=<certs url>)`` accepts them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

DEFAULT_ISSUER = "https://accounts.google.com"
TOKEN_LIFETIME = 3600
PEM_CERTS_PATH = "/oauth2/v1/certs"
JWKS_PATH = "/oauth2/v3/certs"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subject_for(email: str) -> str:
    """A stable numeric subject for a service account, like Google's unique ids."""
    digest = hashlib.sha256(email.encode()).digest()
    return str(10**20 + int.from_bytes(digest[:8], "big"))


class TokenMinter:
    """Signs ID tokens with an RSA key generated on creation and a self-signed certificate."""

    def __init__(self, issuer: str | None = None) -> None:
        self.issuer = issuer or DEFAULT_ISSUER
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha1(public_der).hexdigest()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudtasks-emulator")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._signer = crypt.RSASigner.from_string(private_pem, key_id=self.kid)
        numbers = key.public_key().public_numbers()
        self._jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }

    def mint(self, audience: str, email: str, **claim_overrides: Any) -> str:
        """An RS256 ID token for ``email`` with audience ``audience``.

        ``claim_overrides`` replace or add claims (``exp=0`` gives an expired token;
        a value of None removes the claim).
        """
        now = int(time.time())
        subject = subject_for(email)
        claims: dict[str, Any] = {
            "aud": audience,
            "azp": subject,
            "email": email,
            "email_verified": True,
            "sub": subject,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "iss": self.issuer,
        }
        claims.update(claim_overrides)
        claims = {key: value for key, value in claims.items() if value is not None}
        return jwt.encode(self._signer, claims).decode()

    def pem_certs(self) -> dict[str, str]:
        """``{kid: PEM certificate}``, the format of Google's v1 certs endpoint."""
        return {self.kid: self.certificate_pem}

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK set, the format of Google's v3 certs endpoint."""
        return {"keys": [dict(self._jwk)]}


class CertsServer:
    """A loopback HTTP server publishing a minter's certificate (v1 PEM and v3 JWKS)."""

    def __init__(self, minter: TokenMinter, host: str = "127.0.0.1", port: int = 0) -> None:
        bodies = {
            PEM_CERTS_PATH: json.dumps(minter.pem_certs()).encode(),
            JWKS_PATH: json.dumps(minter.jwks()).encode(),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = bodies.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server."""
        host, port = self._server.server_address[:2]
        host = str(host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def pem_url(self) -> str:
        """URL of the ``{kid: PEM}`` document."""
        return self.base_url + PEM_CERTS_PATH

    @property
    def jwks_url(self) -> str:
        """URL of the JWK set."""
        return self.base_url + JWKS_PATH

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="cloudtasks-emulator-certs",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
