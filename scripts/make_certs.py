#!/usr/bin/env python3
"""Make a private certificate authority and server certificates for the box (with `cryptography`).

    python scripts/make_certs.py --out /etc/appliance/tls --host appliance.internal --ip 10.0.0.5

writes, in --out:
    ca.pem, ca-key.pem            the private CA (10 years; keep ca-key.pem offline once the certificates exist)
    server.pem, server-key.pem    a server certificate for the inference server and Redis (825 days), valid for
                                  localhost, 127.0.0.1, this host's name and every --host / --ip given

Point the inference server at server.pem / server-key.pem (INFERENCE_SSL_CERTFILE / INFERENCE_SSL_KEYFILE),
Redis at the same pair (tls-cert-file / tls-key-file / tls-ca-cert-file), and the connector at ca.pem
(CONNECTOR_MODEL_CA_BUNDLE, CONNECTOR_REDIS_CA_BUNDLE). Run again with --renew to replace the server
certificate with the same CA; an existing CA is never overwritten. Keys are written mode 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import socket
import sys
from pathlib import Path

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest lifetime browsers and most TLS stacks accept for a server certificate


def _key():  # noqa: ANN202 - an EC P-256 private key
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _write_cert(path: Path, cert) -> None:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(out: Path, name: str):  # noqa: ANN201 - (certificate, key)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{name} private CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(out / "ca-key.pem", key)
    _write_cert(out / "ca.pem", cert)
    return cert, key


def load_ca(out: Path):  # noqa: ANN201 - (certificate, key)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "ca-key.pem").read_bytes(), password=None)
    return cert, key


def make_server(out: Path, ca_cert, ca_key, hosts: list[str], ips: list[str]) -> list[str]:  # noqa: ANN001
    """server.pem / server-key.pem signed by the CA; returns the names it is valid for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    names = list(dict.fromkeys(["localhost", *hosts]))
    addresses = list(dict.fromkeys(["127.0.0.1", "::1", *ips]))
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(out / "server-key.pem", key)
    _write_cert(out / "server.pem", cert)
    return names + addresses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PEM files")
    parser.add_argument("--host", action="append", default=[], help="a DNS name of the box (repeatable)")
    parser.add_argument("--ip", action="append", default=[], help="an IP address of the box (repeatable)")
    parser.add_argument("--org", default="On-prem AI appliance", help="the CA's organisation name")
    parser.add_argument("--renew", action="store_true", help="replace the server certificate (same CA)")
    args = parser.parse_args(argv)
    for ip in args.ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            parser.error(f"--ip {ip!r} is not an IP address (names go to --host)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if (out / "ca.pem").exists():
        ca_cert, ca_key = load_ca(out)
        print(f"using the existing CA in {out / 'ca.pem'}")
    else:
        ca_cert, ca_key = make_ca(out, args.org)
        print(f"new private CA: {out / 'ca.pem'} (keep {out / 'ca-key.pem'} safe)")
    if (out / "server.pem").exists() and not args.renew:
        print(f"{out / 'server.pem'} exists: pass --renew to replace it", file=sys.stderr)
        return 1
    names = make_server(out, ca_cert, ca_key, [socket.gethostname(), *args.host], args.ip)
    print(f"server certificate {out / 'server.pem'} for: {', '.join(names)} ({SERVER_DAYS} days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
