"""``toopher-server make-cert``: a private CA and a server certificate.

The module believes plain http only where no local user could answer in the
server's place, so the server normally speaks https.  A site without a
public certificate makes its own CA here and gives the module the CA
certificate as ``ca_bundle``::

    toopher-server make-cert --dir /etc/toopher-server --name toopher.example.org --name 127.0.0.1

writes ``ca.pem`` (the module's ``ca_bundle``), ``ca.key`` (the CA's key:
keep it private or delete it; a new certificate is simply a new make-cert),
``server.pem`` and ``server.key`` (for ``serve --tls-cert/--tls-key``).
Keys are created 0600 with O_EXCL: they never pass through argv, a shell or
a file that others could read first.  python3-cryptography does the X.509.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ServerError

if TYPE_CHECKING:  # imported at run time by make-cert only
    from cryptography import x509

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.pem", "ca.key", "server.pem", "server.key"
DEFAULT_DAYS = 825  # what browsers and most clients accept for a server certificate


@dataclass(frozen=True)
class MadeCertificates:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def subject_alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """IP addresses as iPAddress entries (what clients match an IP URL
    against), everything else as a DNS name."""
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            if not name or any(c.isspace() or c in "/\\" for c in name):
                raise ServerError(f"--name {name!r} is neither a host name nor an IP address") \
                    from None
            entries.append(x509.DNSName(name.lower()))
    return entries


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start; never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except FileExistsError:
        raise ServerError(f"{path} already exists; remove it or choose another --dir") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # not narrowed by the umask for the public files either


def make_certificates(directory: str, names: Sequence[str], days: int = DEFAULT_DAYS,
                      now: datetime.datetime | None = None) -> MadeCertificates:
    """A private CA and a certificate for ``names`` signed by it, in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not names:
        raise ServerError("give at least one --name (the host name or IP address in api_url)")
    if not 1 <= days <= 3650:
        raise ServerError("--days must be between 1 and 3650")
    alt_names = subject_alt_names(names)
    target = Path(directory)
    target.mkdir(mode=0o755, parents=True, exist_ok=True)
    paths = MadeCertificates(target / CA_CERT, target / CA_KEY,
                             target / SERVER_CERT, target / SERVER_KEY)
    for path in (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key):
        if os.path.lexists(path):
            raise ServerError(f"{path} already exists; remove it or choose another --dir")

    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"toopher-server CA for {names[0]}"[:64])])
    ca_cert = (x509.CertificateBuilder()
               .subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=False, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=True,
                   crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               names[0][:64])]))
                   .issuer_name(ca_name)
                   .public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                       key_cert_sign=False, crl_sign=False, encipher_only=False,
                       decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    # Keys first: a failure later leaves no certificate that points at a missing key.
    _write_new(paths.ca_key, pem_key(ca_key), 0o600)
    _write_new(paths.server_key, pem_key(server_key), 0o600)
    _write_new(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_new(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths
