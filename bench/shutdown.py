#!/usr/bin/env python3
"""Shutdown timing and stop-under-load counts.

1. Idle: `harbormaster run` with two testapp apps, SIGTERM once every app is
   ready, time until the process exits. The gateway's own part is the total
   minus the apps' stop (first `stopping` event to the last `app_stopped`).
2. Under load: `harbormaster start`, then 20 two-second requests, 10 SSE
   streams and 30 looping clients, then `harbormaster stop`; counts how every
   request ended.

Usage: bench/shutdown.py [RUNS=20]
"""
import json, os, signal, socket, statistics, subprocess, sys, tempfile, threading, time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
BIN = os.path.join(ROOT, "target", "release")


def ts(ev):
    return datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()


def config(work):
    path = os.path.join(work, "harbormaster.toml")
    with open(path, "w") as f:
        f.write(f"""[gateway]
listen = ["127.0.0.1:0"]
drain_timeout = "10s"
stream_grace = "1s"
[apps.web]
routes = [{{ path = "/" }}]
command = ["{BIN}/testapp"]
[apps.api]
routes = [{{ host = "api.localhost" }}]
command = ["{BIN}/testapp"]
""")
    return path


def idle_run(work):
    proc = subprocess.Popen([f"{BIN}/harbormaster", "run", "--log-format", "json", "-c", config(work)],
                            stderr=subprocess.PIPE, text=True)
    events = []
    for line in proc.stderr:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        events.append(ev)
        if ev.get("event") == "ready":
            break
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    for line in proc.stderr:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    proc.wait()
    exited = time.time()
    stopping = [ts(e) for e in events if e.get("to") == "stopping"]
    stopped = [ts(e) for e in events if e.get("event") == "app_stopped"]
    total = exited - sent
    apps = max(stopped) - min(stopping)
    return total * 1000, (total - apps) * 1000, apps * 1000


def get(addr, path, host="x"):
    s = socket.create_connection(addr, timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def under_load(work):
    cfg = config(work)
    runtime = os.path.join(work, "rt")  # --runtime-dir, so the bench knows where runtime.json is
    subprocess.run([f"{BIN}/harbormaster", "start", "-c", cfg, "--runtime-dir", runtime], check=True, capture_output=True)
    info = json.load(open(os.path.join(runtime, "runtime.json")))
    host, port = info["gateway"][0].rsplit(":", 1)
    addr = (host, int(port))
    counts = {"slow_ok": 0, "slow_cut": 0, "sse_clean": 0, "sse_cut": 0, "fast_ok": 0, "fast_non_200": 0, "fast_refused_after_stop": 0}
    lock = threading.Lock()
    stopping = threading.Event()

    def bump(k):
        with lock:
            counts[k] += 1

    def slow():
        try:
            body = get(addr, "/slow?ms=2000")
            bump("slow_ok" if body.startswith(b"HTTP/1.1 200") and b"slept 2000 ms" in body else "slow_cut")
        except OSError:
            bump("slow_cut")

    def sse():
        try:
            body = get(addr, "/sse?events=1000&interval_ms=100")
            # chunked encoding ends with the zero chunk when the stream is ended cleanly
            bump("sse_clean" if body.endswith(b"0\r\n\r\n") else "sse_cut")
        except OSError:
            bump("sse_cut")

    def fast():
        while True:
            try:
                body = get(addr, "/")
            except OSError:
                if stopping.is_set():
                    bump("fast_refused_after_stop")
                    return
                raise
            bump("fast_ok" if body.startswith(b"HTTP/1.1 200") else "fast_non_200")

    threads = [threading.Thread(target=f) for f in [slow] * 20 + [sse] * 10 + [fast] * 30]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stopping.set()
    t0 = time.time()
    subprocess.run([f"{BIN}/harbormaster", "stop", "-c", cfg, "--runtime-dir", runtime], check=True, capture_output=True)
    took = time.time() - t0
    for t in threads:
        t.join()
    gone = not os.path.exists(os.path.join(runtime, "runtime.json"))
    return counts, took, gone


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "harbormaster", "-p", "testapp"], cwd=ROOT, check=True)
    totals, gateway, apps = [], [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as work:
            t, g, a = idle_run(work)
            totals.append(t); gateway.append(g); apps.append(a)
    print(f"idle, two apps, {RUNS} runs (median ms): SIGTERM -> exit {statistics.median(totals):.1f}, "
          f"gateway's own part {statistics.median(gateway):.1f} (max {max(gateway):.1f}), apps' stop {statistics.median(apps):.1f}")
    with tempfile.TemporaryDirectory() as work:
        counts, took, gone = under_load(work)
    print(f"stop under load (20 x 2 s requests, 10 SSE streams, 30 looping clients): stop took {took*1000:.0f} ms, "
          f"runtime.json removed: {gone}")
    print("  " + ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
