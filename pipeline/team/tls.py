"""The stack's TLS: a certificate authority made once in the stack's directory (``ca.pem``, the file clients
trust: ``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``AWS_CA_BUNDLE``; its key ``ca-key.pem`` never leaves the
directory) and one server certificate it signs (``server.pem``, ``server-key.pem``) for every name and address
clients may use: ``localhost``, this host's names and addresses, the loopback addresses, the address the stack
binds to, and ``$PIPELINE_TEAM_HOST`` (a shared host's name). The server certificate is issued again when a
name is missing from it or it expires within :data:`RENEW_BEFORE`; the authority never is (every client's trust
in it would be lost)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.errors import PipelineError
from pipeline.team.private import read_private, write_private

AUTHORITY, AUTHORITY_KEY = "ca.pem", "ca-key.pem"
CERTIFICATE, CERTIFICATE_KEY = "server.pem", "server-key.pem"
AUTHORITY_LIFETIME = datetime.timedelta(days=3650)
CERTIFICATE_LIFETIME = datetime.timedelta(days=397)  # what browsers accept for a server certificate
RENEW_BEFORE = datetime.timedelta(days=30)


def host_names(host: str, bind: str) -> set[str]:
    """Every name and address a client may reach the stack by (see the module docstring)."""
    names = {"localhost", "127.0.0.1", "::1", host}
    if bind not in ("0.0.0.0", "::"):
        names.add(bind)
    for name in {socket.gethostname(), socket.getfqdn()}:
        names.add(name)
        with contextlib.suppress(OSError):  # a host name that does not resolve: its name alone
            names.update(info[4][0] for info in socket.getaddrinfo(name, None))
    return {name.split("%")[0] for name in names if name}  # an IPv6 address without its zone


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ensure_authority(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The stack's CA: read, or made once (a second ``up`` keeps it)."""
    certificate_path, key_path = directory / AUTHORITY, directory / AUTHORITY_KEY
    if certificate_path.exists() or key_path.exists():
        try:
            certificate = x509.load_pem_x509_certificate(read_private(certificate_path).encode())
            key = serialization.load_pem_private_key(read_private(key_path).encode(), password=None)
        except (OSError, ValueError) as error:
            raise PipelineError(f"the stack's certificate authority in {directory} cannot be read: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PipelineError(f"{key_path} is not the stack's authority key")
        return certificate, key
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"pipeline team stack CA ({socket.gethostname()})"))
        .issuer_name(_name(f"pipeline team stack CA ({socket.gethostname()})"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + AUTHORITY_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, certificate and CRL signing
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _pem_key(key))  # the key first: a certificate without its key is never left
    write_private(certificate_path, certificate.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    return certificate, key


def certificate_names(certificate: x509.Certificate) -> set[str]:
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in alternative.get_values_for_type(x509.IPAddress)} | set(
        alternative.get_values_for_type(x509.DNSName)
    )


def _current(directory: Path, names: Iterable[str], authority: x509.Certificate) -> bool:
    """Whether the server certificate there is the authority's, names all of ``names`` and is not near its end."""
    path = directory / CERTIFICATE
    if not path.exists() or not (directory / CERTIFICATE_KEY).exists():
        return False
    try:
        certificate = x509.load_pem_x509_certificate(read_private(path).encode())
    except (OSError, ValueError):
        return False
    fresh = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
    return fresh and certificate.issuer == authority.subject and set(names) <= certificate_names(certificate)


def ensure_certificates(directory: Path, host: str, bind: str) -> bool:
    """The CA and a server certificate for every name of :func:`host_names`; whether a new one was issued (then
    the running servers must be started again to present it)."""
    authority, authority_key = ensure_authority(directory)
    names = host_names(host, bind)
    if _current(directory, names, authority):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alternative = [
        x509.IPAddress(ipaddress.ip_address(name)) if _is_address(name) else x509.DNSName(name)
        for name in sorted(names)
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True
        )  # digital signature, key encipherment, key agreement
        # serverAuth for every listener; clientAuth for SeaweedFS's servers, which call each other over mutual TLS
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), critical=False)
        .sign(authority_key, hashes.SHA256())
    )
    write_private(directory / CERTIFICATE_KEY, _pem_key(key))
    write_private(directory / CERTIFICATE, certificate.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    return True


def write_bundle(directory: Path) -> Path:
    """``ca-bundle.pem``: the public CAs Python's ``requests`` trusts (certifi's) and the stack's, for a client's
    ``REQUESTS_CA_BUNDLE`` (which replaces the public ones rather than adding to them)."""
    import certifi  # noqa: PLC0415 - requests' own CA list

    public = Path(certifi.where()).read_text()
    path = directory / "ca-bundle.pem"
    write_private(path, f"{public.rstrip()}\n{read_private(directory / AUTHORITY)}", mode=0o644)
    return path
