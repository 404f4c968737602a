#!/usr/bin/env python3
"""An independent UDS-IPC peer, written from docs/PROTOCOL.md and
conformance/PEERS.md alone (Python standard library only).

    udsipc_peer.py hello
    udsipc_peer.py read --socket NAME [--max-message-size N]
        [--inactivity-timeout Dms] [--fail-on HEX] [--panic-on HEX]
        [--allow-uid UID] [--max-accept-errors N] [--pause-on HEX --pause-ms D]
    udsipc_peer.py write --socket NAME [--max-backoff Dms]
        [--max-buffered-writes N] [--write-timeout Dms]

Rule numbers in comments are PROTOCOL.md's.
"""

import collections
import fcntl
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import termios
import threading
import time

MAX_MESSAGE_SIZE = 10 << 20
INACTIVITY_TIMEOUT = 10.0
MAX_BUFFERED_WRITES = 10_000
WRITE_TIMEOUT = 1.0
DIAL_TIMEOUT = 1.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 10.0
STOP_DEADLINE_READ = 10.0
STOP_DEADLINE_WRITE = 30.0
MAX_NAME = 107  # sizeof(sun_path) - 1 on Linux (6.4)
MAX_ATTEMPTS = 5  # 5.10

CTX_PREFIX = "failed to read the length prefix"
CTX_TOO_LARGE = "message too large"
CTX_BODY = "failed to read the complete message"
CTX_HANDLER = "handler failed to process a message"

_out_lock = threading.Lock()

# Deliberately broken rules, for the conformance suite's own tests only
# (conformance/tests/nonconforming.rs): a comma-separated list of rule
# numbers this peer then does NOT follow. "4.8": a newer connection of a
# writer process does not wait for its older ones. "7.4": a stopping reader
# lets its writers keep writing (no SHUT_RD on its connections).
BROKEN = set(filter(None, os.environ.get("UDSIPC_PY_BREAK", "").split(",")))


def emit(**fields):
    line = json.dumps(fields, separators=(",", ":"))
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def die(msg, code=1):
    sys.stderr.write("py-peer: %s\n" % msg)
    sys.stderr.flush()
    os._exit(code)


# ---- 2.2 the length prefix -------------------------------------------------


def encode_uvarint(n):
    """The minimal LEB128 encoding of n (2.2.2)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class Overflow(Exception):
    """A prefix that does not fit in 64 bits (2.2.4, 2.2.5)."""


def decode_uvarint(buf, start=0):
    """Returns (value, bytes used), or None if buf ends inside the prefix.
    Non-minimal prefixes are accepted (2.2.3)."""
    value = 0
    shift = 0
    for i in range(10):
        if start + i >= len(buf):
            return None
        b = buf[start + i]
        if i == 9 and b > 1:
            raise Overflow()
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    raise Overflow()  # unreachable: the 10th byte is > 1 when continued


class Decoder:
    """Frames from a byte stream, fed in pieces (2.2.6). Outcomes:
    ('message', body), ('error', context)."""

    def __init__(self, max_size):
        self.max = max_size
        self.buf = bytearray()
        self.need = None  # declared length of the body being read

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            if self.need is None:
                try:
                    got = decode_uvarint(self.buf)
                except Overflow:
                    out.append(("error", CTX_PREFIX))
                    return out
                if got is None:
                    return out
                n, used = got
                del self.buf[:used]
                if n > self.max:  # 2.4.2: decided from the prefix alone
                    out.append(("error", CTX_TOO_LARGE))
                    return out
                if n == 0:  # 2.3.1
                    continue
                self.need = n
            if len(self.buf) < self.need:
                return out
            body = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            self.need = None
            out.append(("message", body))

    def mid_frame(self):
        return self.need is not None or len(self.buf) > 0

    def eof(self):
        """What the end of the stream means here (3.1-3.3)."""
        if self.need is not None:
            return CTX_BODY
        if self.buf:
            return CTX_PREFIX
        return None


def decode_stream(data, max_size):
    """The whole-stream view used by the vector tests: (messages, outcome,
    context) with outcome 'open' | 'clean-close' | 'error'."""
    d = Decoder(max_size)
    msgs = []
    for kind, value in d.feed(data):
        if kind == "message":
            msgs.append(value)
        else:
            return msgs, "error", value
    return msgs, "open", None


# ---- 6 addressing -----------------------------------------------------------


def parse_name(name):
    """(address for bind/connect, file path or None) per section 6."""
    raw = os.fsencode(name)
    if not raw or len(raw) > MAX_NAME:
        die("invalid socket name: empty or longer than %d bytes" % MAX_NAME)
    if b"\0" in raw[1:]:
        die("invalid socket name: NUL byte")
    if sys.platform.startswith("linux") and raw[:1] in (b"@", b"\0"):
        return b"\0" + raw[1:], None  # 6.1, 6.2
    return raw, raw  # 6.3


# ---- reader -------------------------------------------------------------------


def peer_pid(conn):
    """The connecting process's PID (SO_PEERCRED), or None."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)[0]
    except (OSError, AttributeError):
        return None


def peer_ids(conn):
    """(uid, gid) of the connecting process (SO_PEERCRED), or None."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, gid = struct.unpack("3i", raw)
        return uid, gid
    except (OSError, AttributeError):
        return None


class ConnState:
    """One connection's progress, for newer connections of the same writer
    process (4.8). Counters change under `cond`."""

    def __init__(self, pid):
        self.pid = pid
        self.conn = None
        self.cond = threading.Condition()
        self.read_total = 0
        self.handed_over = 0
        self.closed = False

    def queued(self):
        """Bytes waiting in the socket's receive queue (FIONREAD)."""
        if self.conn is None:
            return 0
        try:
            buf = fcntl.ioctl(self.conn.fileno(), termios.FIONREAD, b"\0\0\0\0")
            return struct.unpack("i", buf)[0]
        except OSError:
            return 0


class Reader:
    def __init__(self, name, max_size, inactivity, fail_on, panic_on, allow_uid=None,
                 max_accept_errors=10, pause_on=None, pause=0.0):
        self.pause_on = pause_on
        self.pause = pause
        self.allow_uid = allow_uid
        self.max_accept_errors = max_accept_errors
        self.max = max_size
        self.inactivity = inactivity
        self.fail_on = fail_on
        self.panic_on = panic_on
        self.lock = threading.Lock()
        self.received = 0
        self.connections = 0
        self.errors = 0
        self.conns = set()
        self.states = set()
        self.threads = []
        self.stopping = threading.Event()
        self.file = None
        self.file_id = None
        self.notify = None
        self.listener = self._activated()
        if self.listener is None:
            self.listener = self._bind(name)
        self.accepter = threading.Thread(target=self._accept_loop, daemon=True)

    def _activated(self):
        # 8.1: LISTEN_FDS for this very process; fd 3.
        fds = os.environ.get("LISTEN_FDS")
        if not fds or os.environ.get("LISTEN_PID") != str(os.getpid()):
            return None
        if int(fds) < 1:
            return None
        for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
        return socket.socket(fileno=3)

    def _bind(self, name):
        rundir = os.environ.get("RUNTIME_DIRECTORY")
        if rundir:  # 8.3
            name = os.path.join(rundir, os.path.basename(name))
        addr, path = parse_name(name)
        if path is not None:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, mode=0o750, exist_ok=True)  # 7.1
            self._clear(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(addr)
        except OSError as e:
            die("bind %r: %s" % (name, e))
        s.listen(1024)
        if path is not None:
            st = os.lstat(path)
            self.file, self.file_id = path, (st.st_dev, st.st_ino)
        return s

    @staticmethod
    def _clear(path):
        # 7.2: only a stale socket is replaced.
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            die("refusing to replace %r: not a socket" % path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(path)
            live = True
        except (BlockingIOError, InterruptedError):
            live = True
        except (ConnectionRefusedError, FileNotFoundError):
            live = False
        finally:
            probe.close()
        if live:
            die("address in use: a live reader accepts on %r" % path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def start(self):
        self.accepter.start()
        target = os.environ.get("NOTIFY_SOCKET")
        if target:  # 8.2
            self._notify(target, b"READY=1")

    def _notify(self, target, msg):
        addr = b"\0" + os.fsencode(target)[1:] if target.startswith("@") else target
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(msg, addr)
            s.close()
        except OSError:
            pass

    def _accept_loop(self):
        failures = 0
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                failures += 1  # 4.6
                if failures > self.max_accept_errors:
                    emit(event="error", context="too many consecutive failures in accept loop",
                         error="%d accept errors in a row" % failures)
                    return
                time.sleep(0.1)
                continue
            failures = 0
            self._serve(conn)

    def _serve(self, conn):
        if self.allow_uid is not None:
            ids = peer_ids(conn)
            if ids is None or ids[0] != self.allow_uid:
                # 4.7: refused before a single byte is read.
                emit(event="error", context="connection rejected",
                     error="peer credentials %r not allowed" % (ids,))
                conn.close()
                return
        state = ConnState(peer_pid(conn))
        state.conn = conn
        with self.lock:
            self.connections += 1
            self.conns.add(conn)
            # 4.8: before anything of this connection is handed over, every
            # older open connection of the same writer process hands over
            # what it had received or was waiting in its socket by now.
            older = [o for o in self.states if o.pid == state.pid and o.pid is not None]
            self.states.add(state)
        waits = []
        if "4.8" in BROKEN:
            older = []
        for o in older:
            with o.cond:
                if not o.closed:
                    waits.append((o, o.read_total + o.queued()))
        t = threading.Thread(target=self._connection, args=(conn, state, waits), daemon=True)
        self.threads.append(t)
        t.start()

    def _error(self, context, err):
        with self.lock:
            self.errors += 1
        emit(event="error", context=context, error=err)

    def _handle(self, body):
        emit(event="message", len=len(body), hex=body.hex(),
             handler_error=self.fail_on is not None and body == self.fail_on)
        try:
            if self.fail_on is not None and body == self.fail_on:
                raise ValueError("rejected by --fail-on")
            if self.panic_on is not None and body == self.panic_on:
                raise RuntimeError("py-peer: --panic-on message")
            if self.pause_on is not None and body == self.pause_on:
                time.sleep(self.pause)
        except Exception as e:  # 4.1, 4.3: counted, connection kept
            self._error(CTX_HANDLER, str(e))
            return
        with self.lock:
            self.received += 1

    def _connection(self, conn, state, waits):
        for older, target in waits:
            with older.cond:
                older.cond.wait_for(lambda: older.closed or older.handed_over >= target)
        d = Decoder(self.max)
        frame_deadline = time.monotonic() + self.inactivity
        try:
            while True:
                if self.stopping.is_set():
                    conn.settimeout(STOP_DEADLINE_READ)
                else:
                    left = frame_deadline - time.monotonic()
                    if left <= 0:
                        return self._timeout(d)
                    conn.settimeout(left)
                try:
                    # Wait without the lock, read under it: the byte count
                    # and the socket's queue are then one snapshot (4.8).
                    ready, _, _ = select.select([conn], [], [], conn.gettimeout())
                    if not ready:
                        raise socket.timeout()
                    with state.cond:
                        data = conn.recv(1 << 20)
                        state.read_total += len(data)
                except socket.timeout:
                    if self.stopping.is_set():
                        return
                    return self._timeout(d)
                except OSError as e:
                    ctx = d.eof()
                    if ctx:
                        self._error(ctx, str(e))
                    return
                if not data:
                    ctx = d.eof()
                    if ctx:
                        self._error(ctx, "unexpected end of stream")
                    return
                outcomes = d.feed(data)
                for kind, value in outcomes:
                    if kind == "error":
                        self._error(value, "malformed frame")
                        return
                    self._handle(value)
                with state.cond:
                    state.handed_over = state.read_total - len(d.buf)
                    state.cond.notify_all()
                # 4.2: the timeout runs from the start of each frame.
                if outcomes or not d.mid_frame():
                    frame_deadline = time.monotonic() + self.inactivity
        finally:
            with self.lock:
                self.conns.discard(conn)
                self.states.discard(state)
            with state.cond:
                state.closed = True
                state.cond.notify_all()
            conn.close()

    def _timeout(self, d):
        # 4.2: an idle connection closes silently; a frame cut by the
        # timeout is a truncated body.
        if d.need is not None:
            self._error(CTX_BODY, "inactivity timeout inside a message")

    def stop(self):
        # 7.4: stop accepting, take what waits in the backlog, then read each
        # connection to its end (the kernel keeps what was sent) after
        # refusing more at the socket.
        self.stopping.set()
        # Wakes the blocked accept (Linux: EINVAL) without closing the
        # socket, so the backlog can still be taken below.
        try:
            self.listener.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self.accepter.join()
        self.listener.setblocking(False)
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                break
            conn.setblocking(True)
            self._serve(conn)
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns if "7.4" not in BROKEN else []:
            try:
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_DEADLINE_READ
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stop_error = ""
        if any(t.is_alive() for t in self.threads):
            stop_error = "connections still open at the deadline"
        if self.file is not None:  # 7.3: only our own file
            try:
                st = os.lstat(self.file)
                if (st.st_dev, st.st_ino) == self.file_id:
                    os.unlink(self.file)
            except FileNotFoundError:
                pass
        target = os.environ.get("NOTIFY_SOCKET")
        if target:
            self._notify(target, b"STOPPING=1")
        return stop_error


# ---- writer -------------------------------------------------------------------


def send_all(conn, data, on_stall):
    """5.5: the timeout bounds each wait for room in the socket, not the
    whole message (socket.sendall's timeout would bound the whole call).
    5.9: when it passes, the reader is slow, not gone: report it once and
    keep waiting on the same connection."""
    view = memoryview(data)
    stalled = False
    while view:
        try:
            sent = conn.send(view)
        except socket.timeout:
            if not stalled:
                on_stall()
                stalled = True
            continue
        view = view[sent:]


class Stopped(Exception):
    pass


class Writer:
    def __init__(self, name, max_backoff, capacity, write_timeout):
        self.addr, _ = parse_name(name)
        self.write_timeout = write_timeout
        self.max_backoff = max_backoff
        self.capacity = capacity
        self.queue = collections.deque()
        self.cond = threading.Condition()
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.stopping = False
        self.stopped = False
        self.discarded = 0
        self.backpressure = 0
        self.deadline = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def try_send(self, msg):
        """5.1; 2.3.2: the empty message is accepted and never sent."""
        with self.cond:
            if self.stopping:
                raise Stopped()
            if not msg:
                return True
            if len(self.queue) >= self.capacity:
                self.dropped += 1
                return False
            self.queue.append(msg)
            self.cond.notify_all()
            return True

    def send(self, msg):
        while not self.try_send(msg):
            time.sleep(0.001)

    def metrics(self):
        with self.cond:
            return dict(sent=self.sent, dropped=self.dropped,
                        failed=self.failed, queue=len(self.queue))

    def _connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(DIAL_TIMEOUT)
        try:
            s.connect(self.addr)
        except OSError:
            s.close()
            raise
        s.settimeout(self.write_timeout)  # 5.5: per stalled send
        return s

    def _past_deadline(self):
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _stalled(self):
        self.backpressure += 1
        emit(event="error", context="write failure",
             error="backpressure: the socket stayed full for the write timeout")

    def _run(self):
        conn = None
        backoff = FIRST_BACKOFF
        attempts = 0  # failed writes of the head message in a row
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if not self.queue or self._past_deadline():
                    # 5.6: what is left at the deadline is discarded.
                    self.discarded = len(self.queue)
                    self.queue.clear()
                    break
                msg = self.queue[0]
            if conn is None:
                try:
                    conn = self._connect()
                    backoff = FIRST_BACKOFF
                except OSError as e:
                    emit(event="error", context="failed to connect", error=str(e))
                    # 5.2, 5.7: back off, also while draining.
                    end = time.monotonic() + backoff
                    if self.deadline is not None:
                        end = min(end, self.deadline)
                    time.sleep(max(0.0, end - time.monotonic()))
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
            try:
                send_all(conn, encode_uvarint(len(msg)) + msg, self._stalled)
            except OSError as e:
                # 5.3, 5.4: close, retry the same message first and whole;
                # 5.10: a message that failed on MAX_ATTEMPTS connections in
                # a row is given up.
                attempts += 1
                with self.cond:
                    if attempts >= MAX_ATTEMPTS:
                        # `failed` counts messages given up, not attempts
                        # (PEERS.md).
                        self.queue.popleft()
                        self.failed += 1
                emit(event="error", context="write failure", error=str(e))
                if attempts >= MAX_ATTEMPTS:
                    emit(event="error", context="write failure",
                         error="message of %d bytes given up after %d attempts" % (len(msg), attempts))
                    attempts = 0
                conn.close()
                conn = None
                continue
            attempts = 0
            with self.cond:
                self.queue.popleft()
                self.sent += 1
        if conn is not None:
            conn.close()
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def stop(self, deadline):
        with self.cond:
            self.stopping = True
            self.deadline = time.monotonic() + deadline
            self.cond.notify_all()
        self.thread.join(deadline + 1.0)
        if self.thread.is_alive():
            return "drain deadline passed"
        if self.discarded:
            return "%d queued message(s) discarded at the deadline" % self.discarded
        return ""


# ---- the contract -----------------------------------------------------------


def parse_flags(args, known):
    """--flag value pairs; an unknown flag is exit 127 (PEERS.md)."""
    out = {}
    it = iter(args)
    for flag in it:
        if flag not in known:
            die("unsupported flag %s" % flag, 127)
        try:
            out[flag] = next(it)
        except StopIteration:
            die("%s needs a value" % flag)
    return out


def millis(v):
    return int(v[:-2] if v.endswith("ms") else v) / 1000.0


def run_read(args):
    f = parse_flags(args, {"--socket", "--max-message-size", "--inactivity-timeout",
                           "--fail-on", "--panic-on", "--allow-uid",
                           "--max-accept-errors", "--pause-on", "--pause-ms"})
    if "--socket" not in f:
        die("read: --socket is required")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    r = Reader(
        f["--socket"],
        int(f.get("--max-message-size", MAX_MESSAGE_SIZE)),
        millis(f["--inactivity-timeout"]) if "--inactivity-timeout" in f else INACTIVITY_TIMEOUT,
        bytes.fromhex(f["--fail-on"]) if "--fail-on" in f else None,
        bytes.fromhex(f["--panic-on"]) if "--panic-on" in f else None,
        int(f["--allow-uid"]) if "--allow-uid" in f else None,
        int(f.get("--max-accept-errors", 10)),
        bytes.fromhex(f["--pause-on"]) if "--pause-on" in f else None,
        millis(f.get("--pause-ms", "0")),
    )
    r.start()
    emit(event="ready")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    stop_error = r.stop()
    with r.lock:
        emit(event="metrics", received=r.received, connections=r.connections,
             errors=r.errors, stop_error=stop_error)


def run_write(args):
    f = parse_flags(args, {"--socket", "--max-backoff", "--max-buffered-writes",
                           "--write-timeout"})
    if "--socket" not in f:
        die("write: --socket is required")
    w = Writer(
        f["--socket"],
        millis(f["--max-backoff"]) if "--max-backoff" in f else MAX_BACKOFF,
        int(f.get("--max-buffered-writes", MAX_BUFFERED_WRITES)),
        millis(f["--write-timeout"]) if "--write-timeout" in f else WRITE_TIMEOUT,
    )
    w.start()
    emit(event="ready")
    stopped = False
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line == "metrics":
            emit(event="metrics", final=False, stop_error="", **w.metrics())
            continue
        if line == "stop":
            emit(event="stopped", stop_error=w.stop(STOP_DEADLINE_WRITE))
            stopped = True
            continue
        if line.startswith("try "):
            try:
                ok = w.try_send(bytes.fromhex(line[4:]))
                emit(event="write", error="" if ok else "buffer full")
            except Stopped:
                emit(event="write", error="stopped")
            continue
        msg = bytes.fromhex(line)
        if stopped:
            try:
                w.try_send(msg)
                emit(event="write", error="")
            except Stopped:
                emit(event="write", error="stopped")
            continue
        try:
            w.send(msg)
        except Stopped:
            die("write: the writer stopped")
    stop_error = "" if stopped else w.stop(STOP_DEADLINE_WRITE)
    emit(event="metrics", final=True, stop_error=stop_error, **w.metrics())


def main(argv):
    role = argv[1] if len(argv) > 1 else ""
    if role == "hello":
        emit(event="hello", name="py", profile="spec", roles=["read", "write"],
             capabilities=["abstract-names", "peer-credentials", "notify", "socket-activation", "shutdown-read"])
    elif role == "read":
        run_read(argv[2:])
    elif role == "write":
        run_write(argv[2:])
    else:
        die("usage: udsipc_peer.py hello | read --socket NAME ... | write --socket NAME ...", 127)


if __name__ == "__main__":
    main(sys.argv)
