"""An HTTPS proxy for the tests, standing between the daemon and STS as a corporate proxy does.

It answers CONNECT for the hosts given (e.g. sts.us-east-1.amazonaws.com:443), terminates TLS
there with a certificate for that host signed by a CA of its own (written to CA_FILE, which the
daemon is told to trust with SSL_CERT_FILE), and forwards the requests inside the tunnel to
moto (TARGET), Host header and signature untouched. It records every CONNECT target and every
plain proxied request (an absolute URL, as clients send through HTTP_PROXY); those it refuses
with 502: nothing should ask it for instance metadata.

GET /__proxy/stats (sent to it directly) answers {"connect": [...], "plain": [...]}.
Prints its port on the first line of stdout.

Usage: python connect_proxy.py http://127.0.0.1:MOTO_PORT CA_FILE HOST...
"""

import datetime
import json
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import upstream

TARGET, CA_FILE, HOSTS = sys.argv[1], sys.argv[2], sys.argv[3:]
seen = {"connect": [], "plain": []}
lock = threading.Lock()


def certificates(hosts):
    """A CA, and a certificate for `hosts` it signed: (CA PEM, certificate chain PEM, key PEM)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "assume-roled test proxy CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem(ca), pem(leaf), key_pem


ca_pem, leaf_pem, key_pem = certificates(HOSTS)
with open(CA_FILE, "wb") as ca_file:
    ca_file.write(ca_pem)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
with tempfile.NamedTemporaryFile() as chain, tempfile.NamedTemporaryFile() as key_file:
    chain.write(leaf_pem)
    chain.flush()
    key_file.write(key_pem)
    key_file.flush()
    context.load_cert_chain(chain.name, key_file.name)


class Inside(BaseHTTPRequestHandler):
    """Requests inside a tunnel: forwarded to moto as they are."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.forward(body)

    def do_GET(self):
        self.forward(b"")

    def forward(self, body):
        upstream.reply(self, *upstream.ask(TARGET, self, body))

    def log_message(self, *_):
        pass


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_CONNECT(self):
        with lock:
            seen["connect"].append(self.path)
        if self.path not in [f"{host}:443" for host in HOSTS]:
            self.send_error(502, "not a host this proxy serves")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tunnel = context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            return
        Inside(tunnel, self.client_address, self.server)
        self.close_connection = True

    def do_GET(self):
        if self.path == "/__proxy/stats":
            return upstream.reply(self, 200, json.dumps(seen).encode(), "application/json")
        self.plain()

    def do_PUT(self):
        self.plain()

    def do_POST(self):
        self.plain()

    def plain(self):
        with lock:
            seen["plain"].append(f"{self.command} {self.path}")
        self.send_error(502, "this proxy forwards nothing in plain HTTP")

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
