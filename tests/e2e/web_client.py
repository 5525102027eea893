"""A raw HTTP/1.1 client for the web port: it writes requests on a plain socket and decodes the
response itself (chunked framing, SSE lines), so the tests see exactly what the server sent and
can walk away mid-stream."""

import json
import socket
import time


class Response:
    def __init__(self, status, headers, body=b""):
        self.status = status
        self.headers = headers  # lower-case name -> value (last wins)
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"Response({self.status}, {self.body[:300]!r})"


class Connection:
    """One connection; request() sends, then read the head and the body (whole or streamed)."""

    def __init__(self, address, timeout=30.0):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, method, path, body=None, headers=None, content_type="application/json"):
        h = {"Host": "test"}
        data = b""
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            if content_type:
                h["Content-Type"] = content_type
            h["Content-Length"] = str(len(data))
        elif method in ("POST", "PUT"):
            h["Content-Length"] = "0"
        h.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        self.sock.sendall(head.encode("latin-1") + b"\r\n" + data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        status_line = self._line().decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError(f"malformed status line {status_line!r}")
        headers = {}
        while True:
            line = self._line().decode("latin-1")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def chunks(self, headers):
        """The body's pieces as they arrive (chunked, Content-Length, or until close)."""
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size_line = self._line().decode("latin-1")
                size = int(size_line.split(";")[0], 16)
                if size == 0:
                    if self._line() != b"":
                        raise AssertionError("chunked body: trailer not supported")
                    return
                data = self._exact(size)
                if self._line() != b"":
                    raise AssertionError("chunked body: chunk not followed by CRLF")
                yield data
        elif "content-length" in headers:
            yield self._exact(int(headers["content-length"]))
        else:
            if self.buf:
                yield self.buf
                self.buf = b""
            while True:
                try:
                    self._fill()
                except EOFError:
                    return
                yield self.buf
                self.buf = b""

    def response(self):
        status, headers = self.read_head()
        return Response(status, headers, b"".join(self.chunks(headers)))


def request(address, method, path, body=None, headers=None, content_type="application/json",
            timeout=60.0):
    c = Connection(address, timeout)
    try:
        c.send(method, path, body, headers, content_type)
        return c.response()
    finally:
        c.close()


class SseStream:
    """A streamed response, parsed strictly into events: every line is `field: value` or a
    `:` comment, and every event ends with a blank line."""

    def __init__(self, address, method, path, body=None, headers=None, timeout=60.0):
        self.conn = Connection(address, timeout)
        self.conn.send(method, path, body, headers)
        self.status, self.headers = self.conn.read_head()
        self.comments = []
        self.events = []  # (event name or None, data string)
        self.first_event_time = None
        self._pending = b""
        self._chunks = None
        if self.status == 200:
            if not self.headers.get("content-type", "").startswith("text/event-stream"):
                raise AssertionError(f"a 200 stream with Content-Type "
                                     f"{self.headers.get('content-type')!r}")
            self._chunks = self.conn.chunks(self.headers)
        else:
            self.body = b"".join(self.conn.chunks(self.headers))

    def error(self):
        return json.loads(self.body.decode("utf-8"))["error"]

    def items(self):
        """Yields ("comment", line) and ("event", (name, data)) as they arrive."""
        name, data = None, []
        for chunk in self._chunks:
            self._pending += chunk
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode("utf-8")
                if line == "":
                    if data:
                        ev = (name, "\n".join(data))
                        if self.first_event_time is None:
                            self.first_event_time = time.monotonic()
                        self.events.append(ev)
                        yield ("event", ev)
                    elif name is not None:
                        raise AssertionError(f"event {name!r} without data")
                    name, data = None, []
                elif line.startswith(":"):
                    self.comments.append(line)
                    yield ("comment", line)
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                else:
                    raise AssertionError(f"not an SSE line: {line!r}")
        if self._pending or data:
            raise AssertionError(f"stream ended inside an event: {self._pending!r} {data!r}")

    def __iter__(self):
        """Yields (event, data) as they arrive; ends with the body."""
        if not hasattr(self, "_items"):
            self._items = self.items()
        for kind, value in self._items:
            if kind == "event":
                yield value

    def next_comment(self):
        """Reads until the next comment line (a heartbeat) and returns it."""
        if not hasattr(self, "_items"):
            self._items = self.items()
        for kind, value in self._items:
            if kind == "comment":
                return value
        return None

    def collect(self):
        for _ in self:
            pass
        self.conn.close()
        return self.events

    def close(self):
        self.conn.close()
