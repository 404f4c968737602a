#!/usr/bin/env python3
"""Before/after figures for issue 24 (proxy and CLI items), one binary at a time
(SECURITY.md's proxy section). Item 9 uses prlimit.

usage: ci/measure-proxy-hardening.py BINARY ITEM...
"""
import json, os, socket, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1]


def hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024.0
    return None


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024.0


def start(args, ready, shell_prefix=None):
    cmd = [BIN] + args
    if shell_prefix:
        cmd = ["sh", "-c", shell_prefix + ' && exec "$0" "$@"'] + cmd
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = p.stderr.readline()
        if not line:
            raise SystemExit(f"no ready line; {lines}")
        lines.append(line.rstrip())
        if line.startswith(ready):
            break
    return p, lines


def http(path_or_addr, raw, timeout=10):
    if isinstance(path_or_addr, tuple):
        s = socket.create_connection(path_or_addr)
    else:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path_or_addr)
    s.settimeout(timeout)
    s.sendall(raw)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        out += b"<timeout>"
    s.close()
    return out


def post(api, path, body, method="POST"):
    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    return http(api, raw).split(b"\r\n")[0].decode(errors="replace")


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def item2(d):
    api = os.path.join(d, "api.sock")
    res = {}
    for kind in ["length100MB", "chunked300MiB"]:
        p, _ = start(["proxy", "--api", api], "api listening")
        base = hwm(p.pid)
        s = socket.socket(socket.AF_UNIX)
        s.connect(api)
        s.settimeout(60)
        piece = b"x" * (1 << 20)
        answer = [b""]
        def reader():
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    answer[0] += b
            except OSError:
                pass
        t = threading.Thread(target=reader)
        t.start()
        t0 = time.time()
        try:
            if kind == "length100MB":
                s.sendall(b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
                for _ in range(95):
                    s.sendall(piece)
            else:
                s.sendall(b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(300):
                    s.sendall(b"100000\r\n" + piece + b"\r\n")
                s.sendall(b"0\r\n\r\n")
        except OSError as e:
            pass
        t.join(30)
        time.sleep(0.5)
        res[kind] = dict(status=answer[0].split(b"\r\n")[0].decode(errors="replace"), hwm_mib=round(hwm(p.pid) - base, 1), rss_after_mib=round(rss(p.pid), 1), secs=round(time.time() - t0, 2))
        s.close()
        stop(p)
    return res


def item3(d):
    api = os.path.join(d, "api.sock")
    front, back = os.path.join(d, "f.sock"), os.path.join(d, "b.sock")
    up = socket.socket(socket.AF_UNIX)
    up.bind(back)
    up.listen(16)
    p, _ = start(["proxy", "--api", api, "--listen", front, "--upstream", back], "api listening", shell_prefix="ulimit -Sn 1024")
    slow = []
    for _ in range(1100):
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(api)
            s.send(b"GET /version HTTP/1.1\r\nH")
        except OSError:
            pass
        slow.append(s)
    t0 = time.time()
    v = http(api, b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10).split(b"\r\n")[0]
    vt = round(time.time() - t0, 2)
    c = socket.socket(socket.AF_UNIX)
    c.connect(front)
    c.sendall(b"\x01x")
    up.settimeout(10)
    try:
        conn, _ = up.accept()
        conn.settimeout(10)
        reached = conn.recv(2) == b"\x01x"
    except OSError as e:
        reached = f"no ({e})"
    # after 35 s, how many slow ones are closed?
    time.sleep(8)
    closed = 0
    for s in slow:
        try:
            s.setblocking(False)
            b = s.recv(10)
            if b == b"" or b:
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    limits = [l for l in open(f"/proc/{p.pid}/limits") if l.startswith("Max open files")][0].split()[3:5]
    stop(p)
    return dict(version=v.decode(errors="replace"), version_secs=vt, proxy_client_reached_upstream=reached, slow_closed_after_8s=closed, nofile_soft_hard=limits)


def item4(d):
    api = os.path.join(d, "api.sock")
    front, back = os.path.join(d, "f.sock"), os.path.join(d, "b.sock")
    up = socket.socket(socket.AF_UNIX)
    up.bind(back)
    up.listen(16)
    p, _ = start(["proxy", "--api", api], "api listening")
    post(api, "/proxies", json.dumps(dict(name="p", listen=front, upstream=back)))
    post(api, "/proxies/p/toxics", json.dumps(dict(name="out", type="refuse", attributes=dict(after=500, duration=5000))))
    d1 = post(api, "/proxies/p/toxics/out", "", "DELETE")
    r = post(api, "/reset", "")
    time.sleep(1.5)
    alive = os.path.exists(front)
    stop(p)
    return dict(delete=d1, reset=r, listen_socket_there_1s_after=alive)


def item5(d):
    api = os.path.join(d, "api.sock")
    p, _ = start(["proxy", "--api", api], "api listening")
    os.remove(api)
    open(api, "w").write("not yours")
    stop(p)
    return dict(regular_file_kept=os.path.exists(api))


def item6(d, n=20000):
    front, back = os.path.join(d, "f.sock"), os.path.join(d, "nobody.sock")
    p, _ = start(["proxy", "--listen", front, "--upstream", back], "proxying")
    # the proxy prints every event on stderr: drain it
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    base = hwm(p.pid)
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(front)
        s.recv(1)
        s.close()
    time.sleep(0.5)
    grown = round(hwm(p.pid) - base, 1)
    stop(p)
    return dict(connections=n, hwm_growth_mib=grown)


def item9(d):
    sock = os.path.join(d, "nobody.sock")
    p = subprocess.Popen([BIN, "send", sock, "--drain-timeout", "60"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    line = b"x" * (1 << 20) + b"\n"
    written = 0
    def feed():
        nonlocal written
        try:
            for _ in range(300):
                p.stdin.write(line)
                written += len(line)
            p.stdin.close()
        except OSError:
            pass
    t = threading.Thread(target=feed, daemon=True)
    t.start()
    time.sleep(4)
    queue = dict(stdin_taken_mib=round(written / 2**20, 1), hwm_mib=round(hwm(p.pid), 1))
    p.kill()
    p.wait()
    # a line that never ends, under a 1.5 GB address-space cap
    p = subprocess.Popen(["prlimit", "--as=1500000000", BIN, "send", sock, "--drain-timeout", "0"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    def feed2():
        try:
            chunk = b"y" * (1 << 20)
            for _ in range(2100):
                p.stdin.write(chunk)
        except OSError:
            pass
    t = threading.Thread(target=feed2, daemon=True)
    t.start()
    try:
        p.wait(120)
    except subprocess.TimeoutExpired:
        p.kill()
    err = p.stderr.read().decode(errors="replace").strip().splitlines()
    return dict(queue_300x1MiB_no_listener=queue, endless_line=dict(exit=p.returncode, stderr=[l for l in err if not l.startswith("warning")][:2]))


def item10(d):
    sock = os.path.join(d, "s.sock")
    p = subprocess.Popen([BIN, "listen", sock, "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stderr.readline()
    msg = b"\x1b]0;pwned\x07\x1b[2J\xc2\x9b31m"
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(bytes([len(msg)]) + msg)
    out, _ = p.communicate(timeout=10)
    return dict(stdout=repr(out))


def item12(d):
    front, back = os.path.join(d, "f.sock"), os.path.join(d, "b.sock")
    up = socket.socket(socket.AF_UNIX)
    up.bind(back)
    up.listen(16)
    p, _ = start(["proxy", "--listen", front, "--upstream", back, "--framing", "none", "--fault", "bandwidth:64000"], "proxying")
    res = {}
    for n in [64000, 128000]:
        c = socket.socket(socket.AF_UNIX)
        c.connect(front)
        conn, _ = up.accept()
        t0 = time.time()
        c.sendall(b"z" * n)
        got = 0
        first = None
        while got < n:
            b = conn.recv(1 << 20)
            if first is None:
                first = len(b)
            got += len(b)
        res[n] = dict(secs=round(time.time() - t0, 2), first_read=first)
        c.close()
        conn.close()
    stop(p)
    return res


def item13(d):
    out = subprocess.run([BIN, "send", os.path.join(d, "s.sock"), "--hex", "0é"], capture_output=True, text=True)
    return dict(exit=out.returncode, stderr=out.stderr.strip())


def item11(d):
    res = {}
    p = subprocess.Popen([BIN, "proxy", "--api", "0.0.0.0:0"], stderr=subprocess.PIPE, text=True)
    try:
        p.wait(3)
        res["tcp_0.0.0.0"] = f"exit {p.returncode}: " + p.stderr.read().strip().splitlines()[-1]
    except subprocess.TimeoutExpired:
        res["tcp_0.0.0.0"] = "served: " + p.stderr.readline().strip()
        stop(p)
    api = os.path.join(d, "api.sock")
    p, _ = start(["proxy", "--api", api], "api listening")
    res["unix_api_mode"] = oct(os.stat(api).st_mode & 0o777)
    stop(p)
    return res


if __name__ == "__main__":
    for item in sys.argv[2:]:
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)
            try:
                r = globals()["item" + item](d)
            except Exception as e:
                r = f"error: {e!r}"
            print(f"item {item}: {json.dumps(r)}", flush=True)
