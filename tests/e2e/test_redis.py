#!/usr/bin/python3
"""E2E (issue 5, shared Redis tier): a real redis-server on a free loopback port and two
daemons sharing it. A session advanced on daemon A continues on daemon B exactly as a replay
of its history would; two turns racing on one session from both daemons cannot both commit
(one is ABORTED and the session is the winner's); deletes and forks cross daemons; without a
disk tier idle states spill to Redis and come back exactly; an unreachable Redis is a clear
startup error, and UNAVAILABLE (with the session untouched) at run time.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import grpc

import harness
from harness import sampling

Code = grpc.StatusCode


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, persistence off, in a temp dir."""

    def __init__(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed (Debian package redis-server; "
                                 "scripts/bootstrap.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="xlstmd-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisTierTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()

    def pair(self, extra=()):
        args = ["--redis-url", self.redis.url, *extra]
        a = harness.Daemon(args, name="xlstmd(A)").start()
        b = harness.Daemon(args, name="xlstmd(B)").start()
        self.addCleanup(b.stop)
        self.addCleanup(a.stop)
        self.assertIn("redis=on", a.log(), "the startup line says Redis is on")
        return a, b

    def test_a_session_moves_between_daemons(self):
        a, b = self.pair()
        ca, cb = a.client(), b.client()
        s = ca.create_session().session_id
        history = []
        for k, (client, daemon) in enumerate(((ca, a), (cb, b), (cb, b), (ca, a), (cb, b))):
            inp = [10 + k, 20 + k, 30 + k]
            t = client.turn(s, tokens=inp, sampling=sampling(max_tokens=6))
            self.assertEqual(t.ids, daemon.reference(history + inp, 6),
                             f"turn {k} on {daemon.name} == replay of the whole history")
            self.assertEqual(t.finished.session_version, k + 1)
            history += inp + t.ids
        # Metadata is the same from both sides, including for a daemon that only looked it up.
        ia, ib = ca.get_session(s), cb.get_session(s)
        self.assertEqual((ia.version, ia.token_count), (5, len(history)))
        self.assertEqual((ib.version, ib.token_count), (5, len(history)))
        # A fork made on B continues on A.
        f = cb.fork_session(s).session_id
        t = ca.turn(f, tokens=[4, 5], sampling=sampling(max_tokens=5))
        self.assertEqual(t.ids, a.reference(history + [4, 5], 5), "fork from B, turn on A")
        # A request id committed on A is known on B.
        ca.turn(s, tokens=[1], sampling=sampling(max_tokens=2), request_id=harness.rid("once"))
        self.assertRpcError(lambda: cb.turn(s, tokens=[1], sampling=sampling(max_tokens=2),
                                            request_id=harness.rid("once")),
                            Code.ALREADY_EXISTS, None, "a request id committed on the other daemon")
        # Its body's fingerprint travels with it: another body under that id is refused.
        self.assertRpcError(lambda: cb.turn(s, tokens=[2], sampling=sampling(max_tokens=2),
                                            request_id=harness.rid("once")),
                            Code.INVALID_ARGUMENT, "different request",
                            "a committed request id reused with another body, other daemon")
        # Deleted on B: gone on A too.
        cb.delete_session(s)
        self.assertRpcError(lambda: ca.get_session(s), Code.NOT_FOUND, None,
                            "GetSession on A after a delete on B")
        self.assertRpcError(lambda: ca.turn(s, tokens=[1], sampling=sampling(max_tokens=2)),
                            Code.NOT_FOUND, None, "a turn on A after a delete on B")

    def test_racing_turns_cannot_both_commit(self):
        # The turns race only when both start from the same version. A tiny stream buffer pauses
        # each turn until its events are written, but gRPC's flow-control window can take a
        # whole short reply, so under load A may commit before B even starts (B then simply
        # continues from A's version): such an attempt is no race, and the test tries again on
        # a new session, up to five times.
        a, b = self.pair(["--stream-buffer", "2"])
        ca, cb = a.client(), b.client()
        for attempt in range(5):
            s = ca.create_session().session_id
            base = [7, 8, 9]
            t0 = ca.turn(s, tokens=base, sampling=sampling(max_tokens=4))
            cb.get_session(s)  # B knows version 1 now
            history = base + t0.ids
            call_a = ca.chat_call(s, tokens=[1, 2], sampling=sampling(max_tokens=24))
            call_b = cb.chat_call(s, tokens=[3, 4], sampling=sampling(max_tokens=24))
            turn_a, turn_b = harness.Turn(), harness.Turn()
            turn_a.add(next(call_a))  # `started`
            turn_b.add(next(call_b))
            raced = turn_a.started.base_version == turn_b.started.base_version == 1
            results = {}
            for name, call, turn in (("A", call_a, turn_a), ("B", call_b, turn_b)):
                try:
                    results[name] = harness.collect(call, turn)
                except grpc.RpcError as e:
                    results[name] = e
            if raced:
                break
        self.assertTrue(raced, "the two turns never started from the same version")
        errors = {n: r for n, r in results.items() if isinstance(r, grpc.RpcError)}
        self.assertEqual(len(errors), 1, f"exactly one of the racing turns fails: {results}")
        (loser, err), = errors.items()
        self.assertEqual(err.code(), Code.ABORTED, f"the loser ({loser}) gets ABORTED: "
                                                   f"{err.details()}")
        winner = "B" if loser == "A" else "A"
        won = results[winner]
        self.assertEqual(won.finished.session_version, 2)
        history += ([1, 2] if winner == "A" else [3, 4]) + won.ids
        # The session is the winner's on both daemons; the loser's retry continues from it.
        for client in (ca, cb):
            self.assertEqual(client.get_session(s).version, 2)
        retry_client, retry_daemon = (ca, a) if loser == "A" else (cb, b)
        inp = [1, 2] if loser == "A" else [3, 4]
        t = retry_client.turn(s, tokens=inp, sampling=sampling(max_tokens=6))
        self.assertEqual(t.ids, retry_daemon.reference(history + inp, 6),
                         "the loser's retry continues from the winner's state")
        self.assertEqual(t.finished.session_version, 3)

    def test_redis_is_the_spill_tier_without_a_state_dir(self):
        # Room for one idle state in RAM and two slots: the rest live only in Redis.
        probe = harness.Daemon([], name="xlstmd(probe)").start()
        info = probe.client().model_info()
        probe.stop()
        state_bytes = info.state_bytes_per_session
        d = harness.Daemon(["--redis-url", self.redis.url, "--slots", "2", "--max-batch", "1",
                            "--host-state-bytes", str(state_bytes),
                            "--http-listen", "127.0.0.1:0"],
                           name="xlstmd(redis spill)").start()
        self.addCleanup(d.stop)
        c = d.client()
        convs = [harness.Conversation(d, c.create_session().session_id) for _ in range(6)]
        for rnd in range(3):
            for i, conv in enumerate(convs):
                conv.turn(c, [(31 * i + 7 * rnd) % 200, 5, 6], max_tokens=5,
                          context=f"round {rnd}, session {i}")
        d.assert_serving("after spilling to Redis")
        m = d.metrics()
        self.assertGreater(m.get(("xlstmd_state_restores_total", (("tier", "redis"),)), 0), 0,
                           "turns restored states from Redis")
        self.assertEqual(m.get(("xlstmd_tier_sessions", (("tier", "redis"),))), 6,
                         "the six sessions are held in Redis")
        self.assertEqual(m.get(("xlstmd_redis_writes_total", ())), 6 + 18,
                         "six creates and eighteen turns were stored in Redis")
        self.assertEqual(m.get(("xlstmd_redis_write_conflicts_total", ())), 0)

    def test_a_flushed_redis_loses_nothing_a_disk_tier_holds(self):
        # Redis is a cache: when it forgets a session (restart without AOF, FLUSHALL,
        # eviction), a daemon with a disk tier keeps serving its own copy and stores it again.
        with tempfile.TemporaryDirectory() as sd:
            d = harness.Daemon(["--redis-url", self.redis.url, "--state-dir", sd,
                                "--durability", "sync"], name="xlstmd(redis + disk)").start()
            self.addCleanup(d.stop)
            c = d.client()
            conv = harness.Conversation(d, c.create_session().session_id)
            conv.turn(c, [3, 4, 5], max_tokens=5, context="before the flush")
            with socket.create_connection(("127.0.0.1", self.redis.port), timeout=5) as sock:
                sock.sendall(b"FLUSHALL\r\n")
                self.assertTrue(sock.recv(16).startswith(b"+OK"))
            conv.check_session(c, "after the flush")
            conv.turn(c, [6, 7], max_tokens=5, context="after the flush")
            # And it is in Redis again: a second daemon without a disk tier continues it.
            b = harness.Daemon(["--redis-url", self.redis.url], name="xlstmd(B)").start()
            self.addCleanup(b.stop)
            conv.daemon = b
            conv.turn(b.client(), [8], max_tokens=4, context="on B after the flush")

    def test_unreachable_redis(self):
        port = free_port()  # nothing listens there
        cmd = [harness.CONFIG.xlstmd, "--model", harness.golden_dir(), "--listen",
               "127.0.0.1:0", "--threads", "1", "--redis-url", f"redis://127.0.0.1:{port}",
               "--redis-timeout", "300ms"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("XLSTMD_")}
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60, env=env)
        self.assertNotEqual(r.returncode, 0, "a daemon whose Redis is down does not start")
        self.assertIn(f"127.0.0.1:{port}", r.stderr, "the error names the Redis address")
        for bad in ("http://x", "redis://host:notaport"):
            r = subprocess.run(cmd[:-4] + ["--redis-url", bad], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=60, env=env)
            self.assertNotEqual(r.returncode, 0, f"--redis-url {bad} is refused")

        # Redis going away under a running daemon: turns fail UNAVAILABLE and roll back.
        redis = RedisServer()
        try:
            d = harness.Daemon(["--redis-url", redis.url, "--redis-timeout", "500ms"],
                               name="xlstmd(redis dies)").start()
            self.addCleanup(d.stop)
            c = d.client()
            s = c.create_session().session_id
            c.turn(s, tokens=[1, 2, 3], sampling=sampling(max_tokens=3))
            redis.proc.kill()
            redis.proc.wait(10)
            self.assertRpcError(lambda: c.turn(s, tokens=[4], sampling=sampling(max_tokens=3)),
                                Code.UNAVAILABLE, None, "a turn while Redis is down")
            self.assertEqual(c.get_session(s).version, 1, "the failed turn left version 1")
            self.assertRpcError(lambda: c.delete_session(s), Code.UNAVAILABLE, None,
                                "a delete while Redis is down")
            info = c.get_session(s)
            self.assertEqual((info.version, info.turn_running), (1, False),
                             "the refused delete left the session as it was")
            e = self.assertRpcError(
                lambda: c.turn(s, tokens=[4], sampling=sampling(max_tokens=3)),
                Code.UNAVAILABLE, None, "another turn while Redis is down")
            self.assertNotIn(str(redis.port), e.details(), "errors do not name Redis' address")
            d.assert_serving("with Redis down")
        finally:
            redis.stop()


if __name__ == "__main__":
    harness.main()
