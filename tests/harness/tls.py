"""A throw-away PKI for the mutual-TLS tests: one CA, a server certificate for 127.0.0.1, and
client certificates (RFC 8705 binds tokens to their SHA-256). TEST ONLY."""

import datetime
import hashlib
import ssl
from pathlib import Path


class Pki:
    def __init__(self, workdir: Path, days=1):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self._x509, self._hashes, self._ser, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.days = days
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2e test CA")])
        self.ca_cert = self._builder(name, name, self.ca_key.public_key()) \
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True) \
            .sign(self.ca_key, hashes.SHA256())
        self.ca_path = self._write("ca.pem", self._pem(self.ca_cert))
        self.server = self.issue("server", server=True)

    def _builder(self, subject, issuer, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        x509 = self._x509
        return x509.CertificateBuilder().subject_name(subject).issuer_name(issuer) \
            .public_key(public_key).serial_number(x509.random_serial_number()) \
            .not_valid_before(now - datetime.timedelta(minutes=5)) \
            .not_valid_after(now + datetime.timedelta(days=self.days))

    def _pem(self, cert):
        return cert.public_bytes(self._ser.Encoding.PEM).decode()

    def _write(self, name, text):
        path = self.dir / name
        path.write_text(text)
        return str(path)

    def issue(self, name, server=False, issuer=None):
        """A certificate `name` signed by this CA (or by `issuer`, another Pki), with its key:
        a dict with `cert` and `key` (paths), `pem`, and `sha256` (hex of the DER)."""
        import ipaddress
        x509, ec = self._x509, self._ec
        signer = issuer or self
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, name)])
        builder = self._builder(subject, signer.ca_cert.subject, key.public_key())
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(signer.ca_key, self._hashes.SHA256())
        der = cert.public_bytes(self._ser.Encoding.DER)
        key_pem = key.private_bytes(self._ser.Encoding.PEM, self._ser.PrivateFormat.PKCS8,
                                    self._ser.NoEncryption()).decode()
        return {"cert": self._write(f"{name}.pem", self._pem(cert)),
                "key": self._write(f"{name}.key", key_pem),
                "pem": self._pem(cert), "sha256": hashlib.sha256(der).hexdigest()}

    def downstream_tls(self, require_client_certificate=True):
        """An Envoy listener `transport_socket` that asks for client certificates of this CA."""
        return {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": require_client_certificate,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": self.server["cert"]},
                                      "private_key": {"filename": self.server["key"]}}],
                "validation_context": {"trusted_ca": {"filename": self.ca_path}},
            },
        }}

    def client_context(self, client=None):
        """An ssl context that trusts this CA, presenting `client` (from `issue`) if given."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if client:
            ctx.load_cert_chain(client["cert"], client["key"])
        return ctx
