"""X.509 certificates and keys for OPC UA security: read (PEM or DER, told by content) and make.

asyncua decides PEM or DER by a file's extension, so a PEM key named
``client.key`` fails there with an ASN.1 error; these read any name, and say
which file is wrong and why. ``make_certificate`` writes the self-signed
application certificate OPC UA expects (its URI in subjectAltName).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from twinloop.errors import ConfigError


def read_certificate(path: str | Path, what: str = "certificate") -> Any:
    """An X.509 certificate from a PEM or DER file (told by content, not by the file's extension)."""
    from cryptography import x509

    content = _content(path, what)
    try:
        return (x509.load_pem_x509_certificate(content) if content.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_certificate(content))
    except ValueError as err:
        raise ConfigError(f"{what} {path}: not an X.509 certificate ({err})") from None


def read_private_key(path: str | Path, password: bytes | None = None, what: str = "private key") -> Any:
    """A private key from a PEM or DER file, told by content; a wrong or missing password is named."""
    from cryptography.hazmat.primitives import serialization

    content = _content(path, what)
    pem = content.lstrip().startswith(b"-----BEGIN")
    try:
        return (serialization.load_pem_private_key(content, password) if pem
                else serialization.load_der_private_key(content, password))
    except TypeError as err:  # encrypted without a password, or a password for a plain key
        raise ConfigError(f"{what} {path}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{what} {path}: cannot read it (a wrong password, or not a key): {err}") from None


def application_uri(certificate: Any, path: str | Path) -> str:
    """The URI in a certificate's subjectAltName, which OPC UA peers match against the application's URI."""
    from cryptography import x509

    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return san.get_values_for_type(x509.UniformResourceIdentifier)[0]
    except (x509.ExtensionNotFound, IndexError):
        raise ConfigError(f"certificate {path}: no URI in its subjectAltName; OPC UA peers reject "
                          "a certificate without the application URI") from None


def _content(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot read it: {err.strerror}") from None


def new_certificate(name: str, uri: str, role: Literal["client", "server"] = "client",
                    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 365) -> tuple[Any, Any]:
    """A self-signed OPC UA application certificate and its RSA key (in memory).

    ``uri`` is the application URI (in subjectAltName, as peers check);
    ``role`` sets the extended key use (client or server authentication).
    """
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = cert_gen.generate_private_key()
    use = ExtendedKeyUsageOID.CLIENT_AUTH if role == "client" else ExtendedKeyUsageOID.SERVER_AUTH
    return cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [use], days=days), key


def make_certificate(folder: str | Path, name: str, uri: str, role: Literal["client", "server"] = "client",
                     hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 365) -> tuple[Path, Path]:
    """Write ``new_certificate`` as ``NAME.pem`` and its key as ``NAME-key.pem`` (mode 0600) in ``folder``."""
    from cryptography.hazmat.primitives import serialization

    certificate, key = new_certificate(name, uri, role, hosts, days)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_path, key_path


def der(certificate: Any) -> bytes:
    """A certificate's DER bytes."""
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.DER)


def der_key(key: Any) -> bytes:
    """A private key's unencrypted PKCS#8 DER bytes (in memory only, for asyncua)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
