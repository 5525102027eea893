#!/usr/bin/python3
"""TLS: the daemon serves gRPC and HTTP over TLS (--tls-cert/--tls-key) and can demand client
certificates (--tls-client-ca); `xlstm chat` connects with --tls-ca. Certificates are made at
test time with the openssl CLI: a CA, a server certificate for 127.0.0.1/localhost and a client
certificate, plus a second CA that signed nothing the daemon trusts.
"""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import grpc

import harness
from harness import sampling


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_pki(tmp):
    """CA, server and client key/cert pairs in `tmp`; returns a dict of paths."""
    def key(name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", f"{name}.key", cwd=tmp)

    def ca(name):
        key(name)
        openssl("req", "-x509", "-new", "-key", f"{name}.key", "-days", "2", "-subj",
                f"/CN={name}", "-out", f"{name}.crt", cwd=tmp)

    def leaf(name, issuer, ext):
        key(name)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out",
                f"{name}.csr", cwd=tmp)
        with open(os.path.join(tmp, f"{name}.ext"), "w") as f:
            f.write(ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey",
                f"{issuer}.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=tmp)

    ca("ca")
    ca("other-ca")
    leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                         "extendedKeyUsage=serverAuth\n")
    leaf("client", "ca", "extendedKeyUsage=clientAuth\n")
    leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    return {n: os.path.join(tmp, n) for n in ("ca", "other-ca", "server", "client", "stranger")}


def read(path):
    with open(path, "rb") as f:
        return f.read()


class TlsDaemon(harness.Daemon):
    """A daemon reached over TLS, trusting `ca`, presenting `client` (a path prefix) if set."""

    def __init__(self, args, ca, client=None, **kw):
        super().__init__(args, **kw)
        self.ca = ca
        self.client_pair = client

    def credentials(self, client=None):
        client = client or self.client_pair
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca + ".crt"),
            private_key=read(client + ".key") if client else None,
            certificate_chain=read(client + ".crt") if client else None)

    def channel(self, client=None):
        if self.address is None:
            raise harness.DaemonError(f"{self.name} is not listening")
        ch = grpc.secure_channel(self.address, self.credentials(client),
                                 options=[("grpc.use_local_subchannel_pool", 1)])
        self._channels.append(ch)
        return ch

    def https(self, path, client=None, ca=None, timeout=10.0, web=False):
        ctx = ssl.create_default_context(cafile=(ca or self.ca) + ".crt")
        client = client or self.client_pair
        if client:
            ctx.load_cert_chain(client + ".crt", client + ".key")
        host, port = (self.web_address if web else self.http_address).rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8")
        finally:
            conn.close()


class TlsTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="xlstmd-tls-")
        cls.pki = make_pki(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def start_tls(self, extra=(), client=None):
        p = self.pki
        args = ["--tls-cert", p["server"] + ".crt", "--tls-key", p["server"] + ".key",
                "--http-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0", *extra]
        d = TlsDaemon(args, ca=p["ca"], client=client, name="xlstmd(tls)")
        self.addCleanup(self._stop_quietly_if_needed, d)
        return d.start()

    def test_grpc_and_http_over_tls(self):
        # A private key others may read is served, with a warning (RELIABILITY.md: warn).
        key = self.pki["server"] + ".key"
        os.chmod(key, 0o644)
        d = self.start_tls()
        self.assertIn(f"--tls-key {key} is accessible by others (mode 0644)", d.log())
        os.chmod(key, 0o600)
        c = d.client()
        s = c.create_session()
        t = c.turn(s.session_id, tokens=[155, 60, 131], sampling=sampling(max_tokens=5))
        self.assertEqual(len(t.ids), 5)
        self.assertEqual(t.ids, d.reference([155, 60, 131], 5))
        self.assertEqual(d.https("/healthz"), (200, "ok\n"))
        self.assertEqual(d.https("/readyz")[0], 200)
        # The web port speaks HTTPS too, and a TLS client that walks away mid-stream costs
        # its turn only (a write to it must not raise SIGPIPE in the daemon).
        status, body = d.https("/v1/models", web=True)
        self.assertEqual(status, 200)
        self.assertIn('"object":"list"', body)
        for _ in range(3):
            ctx = ssl.create_default_context(cafile=self.pki["ca"] + ".crt")
            host, port = d.web_address.rsplit(":", 1)
            conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=ctx)
            conn.request("POST", "/v1/chat/completions", body=json.dumps(
                {"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                 "max_tokens": 4000}), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            resp.fp.readline()
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
        time.sleep(0.5)
        d.assert_serving("after TLS clients left mid-stream")
        # Plaintext to the TLS port is refused, and a client that does not trust the issuer
        # cannot connect.
        plain = grpc.insecure_channel(d.address)
        self.addCleanup(plain.close)
        with self.assertRaises(grpc.RpcError) as e:
            d.health(channel=plain, timeout=3)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        with self.assertRaises(ssl.SSLError):
            d.https("/healthz", ca=self.pki["other-ca"])
        # xlstm chat over TLS: the same greedy reply.
        r = subprocess.run([harness.CONFIG.xlstm, "chat", "--server", d.address, "--tls-ca",
                            self.pki["ca"] + ".crt", "--message", "Hi", "--max-tokens", "4"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        no_tls = subprocess.run([harness.CONFIG.xlstm, "chat", "--server", d.address,
                                 "--message", "Hi", "--connect-timeout", "3s"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(no_tls.returncode, 1)
        self.assertIn("UNAVAILABLE", no_tls.stderr)
        d.stop()

    def test_mutual_tls_demands_a_client_certificate(self):
        p = self.pki
        d = self.start_tls(["--tls-client-ca", p["ca"] + ".crt"], client=p["client"])
        self.assertEqual(d.client().model_info().model != "", True)
        for stranger in (None, p["stranger"]):
            ch = grpc.secure_channel(d.address, grpc.ssl_channel_credentials(
                root_certificates=read(p["ca"] + ".crt"),
                private_key=read(stranger + ".key") if stranger else None,
                certificate_chain=read(stranger + ".crt") if stranger else None))
            self.addCleanup(ch.close)
            with self.assertRaises(grpc.RpcError) as e:
                d.health(channel=ch, timeout=3)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, stranger)
        self.assertEqual(d.https("/healthz"), (200, "ok\n"))
        ctx = ssl.create_default_context(cafile=p["ca"] + ".crt")
        host, port = d.http_address.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), timeout=5, context=ctx)
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        conn.close()
        r = subprocess.run([harness.CONFIG.xlstm, "chat", "--server", d.address, "--tls-ca",
                            p["ca"] + ".crt", "--tls-cert", p["client"] + ".crt", "--tls-key",
                            p["client"] + ".key", "--message", "Hi", "--max-tokens", "2"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.stop()

    def test_bad_tls_files_are_startup_errors_naming_the_file(self):
        p = self.pki
        cases = [
            (["--tls-cert", p["server"] + ".crt"], "--tls-cert and --tls-key go together"),
            (["--tls-cert", p["server"] + ".crt", "--tls-key", p["client"] + ".key"],
             "does not belong to the certificate"),
            (["--tls-cert", p["server"] + ".key", "--tls-key", p["server"] + ".key"],
             "no PEM certificate"),
            (["--tls-cert", p["server"] + ".crt", "--tls-key", self.tmp + "/missing.key"],
             "missing.key: cannot read it"),
            (["--tls-client-ca", p["ca"] + ".crt"], "--tls-client-ca needs --tls-cert"),
        ]
        for args, message in cases:
            r = subprocess.run([harness.CONFIG.xlstmd, "--model", harness.golden_dir(),
                                "--listen", "127.0.0.1:0", *args],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(message, r.stderr, args)


if __name__ == "__main__":
    harness.main()
