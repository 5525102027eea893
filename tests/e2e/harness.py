"""End-to-end test harness: runs the real xlstmd binary and talks to it over gRPC on loopback.

The client side is deliberately independent of the C++ code: Python grpcio (Debian's
python3-grpcio) with message classes generated at run time by `protoc --python_out` from
proto/xlstmd/v1/chat.proto, and methods called by their full names. grpc.health.v1 is spoken
with hand-encoded bytes (its messages have one field each).

Every test file is a unittest module that ends with `harness.main()`. Arguments (ctest passes
them; each has an environment twin so a file can also be run by hand from the repo root):

  --bin-dir DIR      build/bin with xlstmd and xlstm    (XLSTMD_E2E_BIN_DIR, default build/bin)
  --xlstmd PATH      the daemon                         (XLSTMD_E2E_XLSTMD, default BIN/xlstmd)
  --xlstm PATH       the companion tool, the reference  (XLSTMD_E2E_XLSTM, default BIN/xlstm)
  --shared-dir DIR   the team's shared/ folder          (XLSTMD_SHARED_DIR, default ../shared)

Anything else goes to unittest (e.g. `-k cancel`, `-v`). A missing binary, golden directory or
protoc is a failure, never a skip.
"""

import argparse
import atexit
import http.client
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import unittest

import grpc

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN_MODEL = "xlstm-large-a1"

# grpc.health.v1.HealthCheckResponse.ServingStatus
HEALTH_UNKNOWN = 0
HEALTH_SERVING = 1
HEALTH_NOT_SERVING = 2
HEALTH_SERVICE_UNKNOWN = 3


class Config:
    bin_dir = None
    xlstmd = None
    xlstm = None
    shared_dir = None


CONFIG = Config()


def _configure(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin-dir", default=os.environ.get("XLSTMD_E2E_BIN_DIR"))
    parser.add_argument("--xlstmd", default=os.environ.get("XLSTMD_E2E_XLSTMD"))
    parser.add_argument("--xlstm", default=os.environ.get("XLSTMD_E2E_XLSTM"))
    parser.add_argument("--shared-dir", default=os.environ.get("XLSTMD_SHARED_DIR"))
    args, rest = parser.parse_known_args(argv)
    CONFIG.bin_dir = os.path.abspath(args.bin_dir or os.path.join(REPO_ROOT, "build", "bin"))
    CONFIG.xlstmd = os.path.abspath(args.xlstmd or os.path.join(CONFIG.bin_dir, "xlstmd"))
    CONFIG.xlstm = os.path.abspath(args.xlstm or os.path.join(CONFIG.bin_dir, "xlstm"))
    CONFIG.shared_dir = os.path.abspath(args.shared_dir or os.path.join(REPO_ROOT, "..", "shared"))
    return rest


def main():
    """Entry point of every test file: harness arguments first, the rest to unittest."""
    rest = _configure(sys.argv[1:])
    problems = []
    for what, path in (("xlstmd", CONFIG.xlstmd), ("xlstm", CONFIG.xlstm)):
        if not os.access(path, os.X_OK):
            problems.append(f"missing executable {what}: {path} (build it first)")
    if not os.path.isdir(golden_dir()):
        problems.append(f"missing golden model directory {golden_dir()}")
    if shutil.which("protoc") is None:
        problems.append("protoc not found (Debian package protobuf-compiler)")
    if problems:
        for p in problems:
            print("FAIL: " + p, file=sys.stderr)
        sys.exit(1)
    unittest.main(module="__main__", argv=[sys.argv[0]] + rest, verbosity=2)


def make_random_model(prefix="xlstmd-model-", embedding_dim=512, num_blocks=6, dtype=None):
    """A random xLSTM-7B-shaped model from `xlstm mkmodel` in a new temporary directory
    (byte vocabulary; 512 x 6 blocks is decode-bound on a CPU, unlike the tiny golden model).
    The caller removes it."""
    out = tempfile.mkdtemp(prefix=prefix)
    subprocess.run([CONFIG.xlstm, "mkmodel", "--family", "xlstm", "--embedding-dim",
                    str(embedding_dim), "--num-blocks", str(num_blocks), "--num-heads", "4",
                    "--vocab", "257", "--seed", "1", "--out", out, "--force",
                    *(["--weight-dtype", dtype] if dtype else [])],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def golden_dir(model=GOLDEN_MODEL):
    if CONFIG.shared_dir is None:
        _configure([])
    return os.path.join(CONFIG.shared_dir, "golden", model)


# ------------------------------------------------------------------------------------------
# Message classes, generated once per process.

_PB = None
_PB_LOCK = threading.Lock()


def pb():
    """The chat_pb2 module generated from proto/xlstmd/v1/chat.proto into a temp dir."""
    global _PB
    with _PB_LOCK:
        if _PB is None:
            out = tempfile.mkdtemp(prefix="xlstmd-e2e-pb-")
            atexit.register(shutil.rmtree, out, True)
            proto_root = os.path.join(REPO_ROOT, "proto")
            subprocess.run(
                ["protoc", f"--python_out={out}", "-I", proto_root,
                 os.path.join(proto_root, "xlstmd", "v1", "chat.proto")],
                check=True)
            sys.path.insert(0, out)
            _PB = importlib.import_module("xlstmd.v1.chat_pb2")
        return _PB


# ------------------------------------------------------------------------------------------
# Hand-encoded protobuf bits.

def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_len_field(field_number, payload):
    return encode_varint(field_number << 3 | 2) + encode_varint(len(payload)) + payload


def _decode_varint(data, pos):
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_fields(data):
    """A protobuf message's fields as [(number, value)]: ints for varint/fixed, bytes for
    length-delimited (decode nested messages by calling this again)."""
    pos, out = 0, []
    while pos < len(data):
        key, pos = _decode_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _decode_varint(data, pos)
        elif wire == 2:
            n, pos = _decode_varint(data, pos)
            value, pos = data[pos:pos + n], pos + n
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((field, value))
    return out


def rid(label):
    """A request_id (the daemon takes UUIDs only) derived from a readable label, the same
    label giving the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, label))


def error_details(err):
    """A gRPC error's rich details (grpc-status-details-bin, a google.rpc.Status) as
    {short type name: [decoded fields of each]} plus the trailing metadata, decoded by hand
    (no googleapis Python package on Debian). E.g. {"BadRequest": [[(1, b"...")]], ...}."""
    trailers = dict(err.trailing_metadata() or ())
    out = {"_trailers": trailers}
    raw = trailers.get("grpc-status-details-bin")
    if raw is None:
        return out
    for field, value in decode_fields(raw):
        if field != 3:  # google.rpc.Status.details (Any)
            continue
        any_fields = dict(decode_fields(value))
        name = any_fields[1].decode().rsplit(".", 1)[-1]
        out.setdefault(name, []).append(decode_fields(any_fields.get(2, b"")))
    return out


def _encode_health_request(service):
    return encode_len_field(1, service.encode()) if service else b""


def _decode_health_response(data):
    """Returns the `status` field (1) of a HealthCheckResponse; other fields are skipped."""
    status = HEALTH_UNKNOWN
    for field, value in decode_fields(data):
        if field == 1:
            status = value
    return status


# ------------------------------------------------------------------------------------------
# The reference: `xlstm generate` (greedy, one token at a time, ties -> lowest id).

_REF_CACHE = {}
_REF_LOCK = threading.Lock()


def reference_generate(tokens, max_tokens, model=GOLDEN_MODEL, weight_dtype="auto"):
    """Greedy ids from `xlstm generate`; `weight_dtype` must match the daemon's (ModelInfo)."""
    key = (model, tuple(tokens), max_tokens, weight_dtype)
    with _REF_LOCK:
        if key in _REF_CACHE:
            return list(_REF_CACHE[key])
    cmd = [CONFIG.xlstm, "generate", "--model", golden_dir(model),
           "--tokens", ",".join(str(t) for t in tokens),
           "--max-tokens", str(max_tokens), "--threads", "1", "--weight-dtype", weight_dtype]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"reference `{' '.join(cmd[:2])} ...` failed rc={proc.returncode}: "
                             f"{proc.stderr.strip()}")
    ids = [int(x) for x in proc.stdout.strip().split(",") if x]
    if len(ids) != max_tokens:
        raise AssertionError(f"xlstm generate printed {len(ids)} ids, wanted {max_tokens}")
    with _REF_LOCK:
        _REF_CACHE[key] = ids
    return list(ids)


# ------------------------------------------------------------------------------------------
# Prometheus text format (0.0.4), parsed independently of the daemon's code.

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape_label(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_metrics(text):
    """{(name, ((label, value), ...) sorted): float} for every sample line. Raises on a line
    that is neither a comment nor a well-formed sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"malformed exposition line: {line!r}")
        labels = []
        if m.group(2):
            pos = 0
            for lm in _LABEL_RE.finditer(m.group(2)):
                if lm.start() != pos:
                    raise AssertionError(f"malformed labels: {line!r}")
                labels.append((lm.group(1), _unescape_label(lm.group(2))))
                pos = lm.end()
            if pos != len(m.group(2)):
                raise AssertionError(f"malformed labels: {line!r}")
        key = (m.group(1), tuple(sorted(labels)))
        if key in out:
            raise AssertionError(f"duplicate series: {line!r}")
        value = m.group(3)
        out[key] = {"+Inf": float("inf"), "-Inf": float("-inf")}.get(value, None)
        if out[key] is None:
            out[key] = float(value)
    return out


def metric(samples, name, **labels):
    """One sample's value (0 when the series does not exist)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------------------------------
# The daemon.

_ALL_DAEMONS = []
_LISTEN_RE = re.compile(r"listen=\S*?(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9A-Fa-f:.]+\]:\d+|localhost:\d+)")
# The serving line's `http=HOST:PORT` (with --http-listen; `http=none` without).
_HTTP_RE = re.compile(r"\bhttp=(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9A-Fa-f:.]+\]:\d+|localhost:\d+)")
_WEB_RE = re.compile(r"\bweb=(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9A-Fa-f:.]+\]:\d+|localhost:\d+)")


class DaemonError(AssertionError):
    pass


class Daemon:
    """One xlstmd process on 127.0.0.1:<free port>.

    start() waits for the startup line with `listen=HOST:PORT` and then for health SERVING.
    stop() sends SIGTERM and requires exit code 0 within the timeout (else SIGKILL + failure).
    log() is everything the process printed, for failure messages.
    """

    def __init__(self, args=(), model=GOLDEN_MODEL, threads=1, env=None, name="xlstmd",
                 model_dir=None):
        self.name = name
        # `model_dir` serves a model outside the golden set (e.g. one made by `xlstm mkmodel`).
        self.model_dir = model_dir or golden_dir(model)
        self.args = [str(a) for a in args]
        self.threads = threads
        self.env_overrides = dict(env or {})
        self.proc = None
        self.address = None
        self.http_address = None  # with --http-listen, from the serving line
        self.web_address = None  # with --web-listen, from the serving line
        self.returncode = None
        self._lines = []
        self._lines_lock = threading.Lock()
        self._listen_event = threading.Event()
        self._readers = []
        self._channels = []
        _ALL_DAEMONS.append(self)

    # -- lifecycle --

    def command(self):
        cmd = [CONFIG.xlstmd, "--model", self.model_dir, "--listen", "127.0.0.1:0"]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        return cmd + self.args

    def start(self, timeout=60):
        env = {k: v for k, v in os.environ.items() if not k.startswith("XLSTMD_")}
        env.update(self.env_overrides)
        cmd = self.command()
        self._append("harness", "$ " + " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT)
        for stream, label in ((self.proc.stderr, "stderr"), (self.proc.stdout, "stdout")):
            t = threading.Thread(target=self._reader, args=(stream, label), daemon=True)
            t.start()
            self._readers.append(t)
        deadline = time.monotonic() + timeout
        while not self._listen_event.wait(0.05):
            if self.proc.poll() is not None:
                self._join_readers()
                raise DaemonError(f"{self.name} exited with {self.proc.returncode} before printing "
                                  f"its listen= line\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise DaemonError(f"{self.name} printed no listen= line in {timeout}s\n"
                                  f"{self.log()}")
        self.wait_health(HEALTH_SERVING, timeout=max(1.0, deadline - time.monotonic()))
        return self

    def _reader(self, stream, label):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._append(label, line)
            if self.address is None:
                m = _LISTEN_RE.search(line)
                if m:
                    h = _HTTP_RE.search(line)
                    self.http_address = h.group(1) if h else None
                    w = _WEB_RE.search(line)
                    self.web_address = w.group(1) if w else None
                    self.address = m.group(1)
                    self._listen_event.set()
        stream.close()

    def _append(self, label, line):
        with self._lines_lock:
            self._lines.append(f"[{label}] {line}")

    def _join_readers(self, timeout=5):
        for t in self._readers:
            t.join(timeout)

    def log(self, tail=200):
        with self._lines_lock:
            lines = list(self._lines)
        if len(lines) > tail:
            lines = [f"... ({len(lines) - tail} earlier lines)"] + lines[-tail:]
        return "\n".join(lines)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self._append("harness", f"sending {signal.Signals(sig).name}")
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Exit code, or None if the process is still running after `timeout` seconds."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._join_readers()
        self.returncode = rc
        return rc

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._join_readers()

    def close_channels(self):
        for ch in self._channels:
            ch.close()
        self._channels = []

    def stop(self, timeout=20, expect_rc=0):
        """SIGTERM, then wait; a hang is SIGKILLed and reported. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            rc = self.wait_exit(timeout)
            if rc is None:
                self.kill()
                self.close_channels()
                raise DaemonError(f"{self.name} did not exit within {timeout}s of SIGTERM "
                                  f"(killed)\n{self.log()}")
        else:
            rc = self.wait_exit(5)
        self.close_channels()
        if expect_rc is not None and rc != expect_rc:
            raise DaemonError(f"{self.name} exited with {rc}, expected {expect_rc}\n{self.log()}")
        return rc

    # -- gRPC --

    def channel(self):
        """A new channel (its own TCP connection) to the daemon; closed by stop()."""
        if self.address is None:
            raise DaemonError(f"{self.name} is not listening")
        options = [("grpc.enable_retries", 0), ("grpc.use_local_subchannel_pool", 1),
                   ("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20)]
        ch = grpc.insecure_channel(self.address, options=options)
        self._channels.append(ch)
        return ch

    def client(self, key=None, channel=None):
        return Client(channel or self.channel(), key=key)

    def health(self, service="", timeout=2.0, channel=None):
        """The serving status of `service` ("" = the server). Raises grpc.RpcError."""
        ch = channel or self._health_channel()
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=_encode_health_request,
                               response_deserializer=_decode_health_response)
        return check(service, timeout=timeout)

    def _health_channel(self):
        if not getattr(self, "_hch", None) or self._hch not in self._channels:
            self._hch = self.channel()
        return self._hch

    def wait_health(self, want, timeout=30.0, service=""):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if not self.alive():
                self._join_readers()
                raise DaemonError(f"{self.name} exited with {self.proc.returncode} while waiting "
                                  f"for health {want}\n{self.log()}")
            try:
                last = self.health(service, timeout=1.0)
                if last == want:
                    return
            except grpc.RpcError as e:
                last = f"{e.code()}: {e.details()}"
            if time.monotonic() > deadline:
                raise DaemonError(f"{self.name}: health({service!r}) is {last}, wanted {want} "
                                  f"after {timeout}s\n{self.log()}")
            time.sleep(0.05)

    # -- HTTP (--http-listen) --

    def http(self, path, method="GET", timeout=10.0):
        """(status, headers dict with lower-case names, body str) of one HTTP request."""
        if self.http_address is None:
            raise DaemonError(f"{self.name} has no http= address (start it with --http-listen)")
        host, port = self.http_address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read().decode("utf-8")
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def metrics_text(self):
        status, headers, body = self.http("/metrics")
        if status != 200:
            raise DaemonError(f"{self.name}: /metrics answered {status}: {body[:200]}")
        return body

    def metrics(self):
        """The /metrics exposition parsed: {(name, ((label, value), ...)): float}."""
        return parse_metrics(self.metrics_text())

    def weight_dtype(self):
        """The daemon's weight dtype (ModelInfo.weight_dtype), for the reference."""
        if getattr(self, "_weight_dtype", None) is None:
            self._weight_dtype = self.client().model_info().weight_dtype
            if self._weight_dtype not in ("f32", "bf16", "int8", "q4"):
                raise DaemonError(f"ModelInfo.weight_dtype is {self._weight_dtype!r}, "
                                  "not f32, bf16, int8 or q4")
        return self._weight_dtype

    def reference(self, tokens, max_tokens):
        """`xlstm generate` over `tokens` with this daemon's model and weight dtype."""
        model = os.path.basename(self.model_dir)
        return reference_generate(tokens, max_tokens, model=model,
                                  weight_dtype=self.weight_dtype())

    def assert_serving(self, context=""):
        """The process is alive and health says SERVING (used after every error case)."""
        if not self.alive():
            self._join_readers()
            raise DaemonError(f"{self.name} died ({context}): exit {self.proc.returncode}\n"
                              f"{self.log()}")
        try:
            status = self.health(timeout=5.0)
        except grpc.RpcError as e:
            raise DaemonError(f"{self.name}: health check failed ({context}): {e.code()} "
                              f"{e.details()}\n{self.log()}")
        if status != HEALTH_SERVING:
            raise DaemonError(f"{self.name}: health is {status}, not SERVING ({context})")


# ------------------------------------------------------------------------------------------
# Client.

class Turn:
    """The events of one Chat call, checked for shape: started, delta*, finished."""

    def __init__(self):
        self.started = None
        self.deltas = []
        self.finished = None
        self.ids = []
        self.text = ""
        self.first_delta_time = None
        self.start_time = time.monotonic()
        self.end_time = None

    def add(self, event):
        kind = event.WhichOneof("event")
        if self.finished is not None:
            raise AssertionError(f"event {kind} after `finished`")
        if kind == "started":
            if self.started is not None:
                raise AssertionError("two `started` events")
            self.started = event.started
        elif kind == "delta":
            if self.started is None:
                raise AssertionError("`delta` before `started`")
            if self.first_delta_time is None:
                self.first_delta_time = time.monotonic()
            self.deltas.append(event.delta)
            self.ids.extend(event.delta.token_ids)
            self.text += event.delta.text
        elif kind == "finished":
            if self.started is None:
                raise AssertionError("`finished` before `started`")
            self.finished = event.finished
            self.end_time = time.monotonic()
        else:
            raise AssertionError(f"ChatEvent with no event set: {event!r}")
        return kind

    def __repr__(self):
        fin = self.finished
        return (f"Turn(input={list(self.started.input_token_ids) if self.started else None}, "
                f"ids={self.ids[:32]}{'...' if len(self.ids) > 32 else ''} ({len(self.ids)}), "
                f"finished={None if fin is None else (fin.finish_reason, fin.session_version)})")

    @property
    def input_ids(self):
        return list(self.started.input_token_ids)


def sampling(**kw):
    return pb().SamplingParams(**kw)


class Client:
    """Calls ChatService/ModelService methods by full name, with optional bearer key."""

    def __init__(self, channel, key=None):
        self.channel = channel
        self.metadata = (("authorization", f"Bearer {key}"),) if key is not None else None

    def _md(self, metadata):
        return self.metadata if metadata is None else metadata

    def _unary(self, service, method, request, response_cls, timeout, metadata):
        call = self.channel.unary_unary(f"/xlstmd.v1.{service}/{method}",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=response_cls.FromString)
        return call(request, timeout=timeout, metadata=self._md(metadata))

    def create_session(self, system_prompt="", timeout=20, metadata=None):
        return self._unary("ChatService", "CreateSession",
                           pb().CreateSessionRequest(system_prompt=system_prompt), pb().Session,
                           timeout, metadata)

    def get_session(self, session_id, timeout=10, metadata=None):
        return self._unary("ChatService", "GetSession",
                           pb().GetSessionRequest(session_id=session_id), pb().Session,
                           timeout, metadata)

    def list_sessions(self, page_size=0, page_token="", timeout=10, metadata=None):
        return self._unary("ChatService", "ListSessions",
                           pb().ListSessionsRequest(page_size=page_size, page_token=page_token),
                           pb().ListSessionsResponse, timeout, metadata)

    def all_sessions(self, page_size=0):
        """Every session id over all pages, in the order the pages gave them."""
        ids, token, pages = [], "", 0
        while True:
            resp = self.list_sessions(page_size=page_size, page_token=token)
            ids.extend(s.session_id for s in resp.sessions)
            pages += 1
            if not resp.next_page_token:
                return ids
            if pages > 10000:
                raise AssertionError("ListSessions never ends (next_page_token keeps coming)")
            token = resp.next_page_token

    def fork_session(self, session_id, timeout=20, metadata=None, version=None):
        req = pb().ForkSessionRequest(session_id=session_id)
        if version is not None:
            req.version = version
        return self._unary("ChatService", "ForkSession", req, pb().Session, timeout, metadata)

    def rewind_session(self, session_id, version, timeout=20, metadata=None):
        return self._unary("ChatService", "RewindSession",
                           pb().RewindSessionRequest(session_id=session_id, version=version),
                           pb().Session, timeout, metadata)

    def delete_session(self, session_id, timeout=20, metadata=None):
        return self._unary("ChatService", "DeleteSession",
                           pb().DeleteSessionRequest(session_id=session_id),
                           pb().DeleteSessionResponse, timeout, metadata)

    def model_info(self, timeout=10, metadata=None):
        return self._unary("ModelService", "GetModelInfo", pb().GetModelInfoRequest(),
                           pb().ModelInfo, timeout, metadata)

    def export_chunks(self, session_id, timeout=60, metadata=None):
        """ExportSession's SnapshotChunks, as a list (the call runs to its end)."""
        call = self.channel.unary_stream("/xlstmd.v1.ChatService/ExportSession",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=pb().SnapshotChunk.FromString)
        return list(call(pb().ExportSessionRequest(session_id=session_id), timeout=timeout,
                         metadata=self._md(metadata)))

    def export_session(self, session_id, timeout=60, metadata=None):
        """The exported snapshot's bytes."""
        return b"".join(c.data for c in self.export_chunks(session_id, timeout, metadata))

    def import_chunks(self, chunks, timeout=60, metadata=None):
        """ImportSession from an iterable of SnapshotChunk; returns the new Session."""
        call = self.channel.stream_unary("/xlstmd.v1.ChatService/ImportSession",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=pb().Session.FromString)
        return call(iter(chunks), timeout=timeout, metadata=self._md(metadata))

    def import_session(self, snapshot, chunk_bytes=1 << 20, declare_total=True, timeout=60,
                       metadata=None):
        """ImportSession of `snapshot` (bytes) cut into chunks of `chunk_bytes`."""
        return self.import_chunks(snapshot_chunks(snapshot, chunk_bytes, declare_total),
                                  timeout, metadata)

    def chat_request(self, session_id, tokens=None, message=None, sampling=None,
                     expected_version=None, request_id=""):
        req = pb().ChatRequest(session_id=session_id, request_id=request_id)
        if tokens is not None:
            req.tokens.ids.extend(tokens)
            req.tokens.SetInParent()  # an empty TokenIds still selects the `tokens` input
        if message is not None:
            req.message = message
        if sampling is not None:
            req.sampling.CopyFrom(sampling)
        if expected_version is not None:
            req.expected_version = expected_version
        return req

    def chat_call(self, session_id, tokens=None, message=None, sampling=None,
                  expected_version=None, request_id="", timeout=60, metadata=None):
        """Starts a Chat call and returns its response iterator (also the call object)."""
        req = self.chat_request(session_id, tokens, message, sampling, expected_version,
                                request_id)
        return self.chat_raw(req.SerializeToString(), timeout=timeout, metadata=metadata)

    def chat_raw(self, request_bytes, timeout=60, metadata=None):
        """A Chat call with an already serialized ChatRequest (for malformed requests)."""
        method = self.channel.unary_stream("/xlstmd.v1.ChatService/Chat",
                                           request_serializer=lambda b: b,
                                           response_deserializer=pb().ChatEvent.FromString)
        return method(request_bytes, timeout=timeout, metadata=self._md(metadata))

    def turn(self, session_id, tokens=None, message=None, sampling=None, expected_version=None,
             request_id="", timeout=60, metadata=None):
        """Runs one turn to the end and returns its Turn. Errors raise grpc.RpcError."""
        call = self.chat_call(session_id, tokens, message, sampling, expected_version,
                              request_id, timeout, metadata)
        return collect(call)


def snapshot_chunks(snapshot, chunk_bytes=1 << 20, declare_total=True):
    """SnapshotChunks of `snapshot`; the first carries total_bytes when `declare_total`."""
    out = []
    for off in range(0, max(1, len(snapshot)), chunk_bytes):
        c = pb().SnapshotChunk(data=snapshot[off:off + chunk_bytes])
        if off == 0 and declare_total:
            c.total_bytes = len(snapshot)
        out.append(c)
    return out


def collect(call, turn=None):
    turn = turn or Turn()
    for event in call:
        turn.add(event)
    if turn.finished is None:
        raise AssertionError("Chat stream ended OK without a `finished` event")
    return turn


class Conversation:
    """A session driven with raw-token greedy turns, whose every id the test knows.

    `history` is every id the session's state has consumed (each turn's input and output), so
    `check_turn` can compare a turn with `xlstm generate` over exactly that history, and a
    restarted or imported session can be checked against it too.
    """

    def __init__(self, daemon, session_id, history=None, version=0):
        self.daemon = daemon
        self.session_id = session_id
        self.history = list(history or [])
        self.version = version

    def turn(self, client, tokens, max_tokens=8, request_id="", check=True, context=""):
        """Runs a greedy turn, checks it against the reference, and appends it to history."""
        t = client.turn(self.session_id, tokens=tokens, sampling=sampling(max_tokens=max_tokens),
                        request_id=request_id)
        self.record(t, tokens, max_tokens, check, context)
        return t

    def record(self, t, tokens, max_tokens, check=True, context=""):
        """Appends a finished turn (sent as `tokens`) after checking it."""
        if t.input_ids != list(tokens):
            raise AssertionError(f"{context}: `started` reports input {t.input_ids}, the turn "
                                 f"sent {list(tokens)}")
        if len(t.ids) != max_tokens:
            raise AssertionError(f"{context}: a raw-token greedy turn without stops must run to "
                                 f"max_tokens={max_tokens}: {t!r}")
        if t.started.base_version != self.version:
            raise AssertionError(f"{context}: turn started from version "
                                 f"{t.started.base_version}, the test expected {self.version}")
        if check:
            self.check_ids(t.input_ids, t.ids, context)
        self.history += t.input_ids + t.ids
        self.version += 1
        if t.finished.session_version != self.version:
            raise AssertionError(f"{context}: finished.session_version "
                                 f"{t.finished.session_version}, expected {self.version}")

    def check_ids(self, input_ids, ids, context=""):
        """ids == `xlstm generate` over history + input_ids (bit-exact greedy)."""
        expected = self.daemon.reference(self.history + list(input_ids), len(ids))
        if list(ids) != expected:
            raise AssertionError(
                f"{context}: session {self.session_id} at version {self.version} produced "
                f"{list(ids)}, but `xlstm generate` over its {len(self.history)} history ids + "
                f"input {list(input_ids)} gives {expected}")

    def check_session(self, client, context=""):
        """GetSession agrees with what the test knows (version, token count, idle)."""
        s = client.get_session(self.session_id)
        if (s.version, s.token_count) != (self.version, len(self.history)):
            raise AssertionError(f"{context}: session {self.session_id} is at version "
                                 f"{s.version} with {s.token_count} tokens; expected version "
                                 f"{self.version} with {len(self.history)}")
        return s


def wait_turn_idle(client, session_id, timeout=10.0):
    """Polls GetSession until no turn runs on the session (cancel is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        s = client.get_session(session_id)
        if not s.turn_running:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session_id} still has turn_running=true "
                                 f"{timeout}s after its call ended")
        time.sleep(0.02)


class StreamReader:
    """Reads a Chat call on a background thread; lets a test wait for the first delta."""

    def __init__(self, call, pause_after_first_delta=False):
        self.call = call
        self.turn = Turn()
        self.error = None
        self.first_delta = threading.Event()
        self.started = threading.Event()
        self.done = threading.Event()
        self.resume = threading.Event()
        if not pause_after_first_delta:
            self.resume.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for event in self.call:
                kind = self.turn.add(event)
                if kind == "started":
                    self.started.set()
                elif kind == "delta" and not self.first_delta.is_set():
                    self.first_delta.set()
                    self.resume.wait()
        except grpc.RpcError as e:
            self.error = e
        except Exception as e:  # a protocol violation in Turn.add
            self.error = e
        finally:
            self.turn.end_time = time.monotonic()
            self.started.set()
            self.first_delta.set()
            self.done.set()

    def wait_first_delta(self, timeout=30.0):
        if not self.first_delta.wait(timeout):
            raise AssertionError(f"no delta within {timeout}s")
        if self.error is not None and not self.turn.deltas:
            raise AssertionError(f"the call failed before its first delta: {describe(self.error)}")

    def join(self, timeout=60.0):
        self.resume.set()
        if not self.done.wait(timeout):
            raise AssertionError(f"the call did not end within {timeout}s")
        self.thread.join(5)
        return self


def describe(err):
    if isinstance(err, grpc.RpcError):
        return f"{err.code()}: {err.details()}"
    return repr(err)


# ------------------------------------------------------------------------------------------
# TestCase base.

class E2ETestCase(unittest.TestCase):
    """Dumps the log of every daemon that was alive or started during a failed test."""

    maxDiff = 4000

    def run(self, result=None):
        result = result or self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        start_count = len(_ALL_DAEMONS)
        alive_before = [d for d in _ALL_DAEMONS if d.alive()]
        outcome = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            seen = set()
            for d in alive_before + _ALL_DAEMONS[start_count:]:
                if id(d) in seen:
                    continue
                seen.add(id(d))
                sys.stderr.write(f"\n---- {d.name} output ({self.id()}) ----\n{d.log()}\n"
                                 f"---- end of {d.name} output ----\n")
        return outcome

    def start_daemon(self, args=(), **kw):
        """A daemon for this test only, stopped (exit 0 required) at cleanup."""
        d = Daemon(args, **kw)
        self.addCleanup(self._stop_quietly_if_needed, d)
        d.start()
        return d

    @staticmethod
    def _stop_quietly_if_needed(d):
        if d.proc is not None and d.returncode is None:
            d.stop()

    def assertRpcError(self, fn, code, contains=None, context=""):
        """Runs fn (which must consume any stream) and requires a gRPC error with `code`."""
        try:
            result = fn()
        except grpc.RpcError as e:
            got = e.code()
            self.assertEqual(got, code, f"{context}: wanted {code.name}, got {got.name}: "
                                        f"{e.details()!r}")
            if contains is not None:
                details = e.details() or ""
                if hasattr(contains, "search"):
                    self.assertRegex(details, contains, f"{context}: error message")
                else:
                    self.assertIn(contains, details, f"{context}: error message")
            return e
        self.fail(f"{context}: wanted {code.name}, but the call succeeded: {result!r}"[:2000])


def concurrency_profile(turns):
    """Largest number of turns whose [first delta, end] intervals overlap."""
    points = []
    for t in turns:
        if t.first_delta_time is None or t.end_time is None:
            continue
        points.append((t.first_delta_time, 1))
        points.append((t.end_time, -1))
    points.sort()
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best

