#!/usr/bin/env python3
"""Median time from an instance's crash to its replacement being ready.

Runs `harbormaster run` (release build) with one testapp instance and a 0 ms
backoff, crashes the instance N times through `GET /crash`, and reads
harbormaster's JSON state-change events. For each crash it reports:
  - crash -> ready: from the client sending /crash to the `ready` event;
  - exit noticed -> ready: from the `restarting` event to the `ready` event.

Usage: bench/crash_recovery.py [CRASHES]   (default 30)
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASHES = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def ts(event):
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "harbormaster", "-p", "testapp"], cwd=ROOT, check=True)
    target = os.path.join(ROOT, "target", "release")
    work = tempfile.mkdtemp(prefix="hm-crash-bench-")
    config = os.path.join(work, "harbormaster.toml")
    with open(config, "w") as f:
        f.write(f"""
[apps.web]
routes = [{{ path = "/" }}]
command = ["{target}/testapp"]
[apps.web.restart]
policy = "always"
backoff_initial = "0ms"
backoff_max = "0ms"
max_restarts = 100000
""")
    proc = subprocess.Popen([f"{target}/harbormaster", "run", "--log-format", "json", "-c", config],
                            stderr=subprocess.PIPE, text=True)
    events, cond = [], threading.Condition()

    def read():
        for line in proc.stderr:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with cond:
                events.append(ev)
                cond.notify_all()
    threading.Thread(target=read, daemon=True).start()

    def wait_ready(n):
        deadline = time.time() + 20
        with cond:
            while True:
                ready = [e for e in events if e.get("event") == "state_change" and e.get("to") == "ready"]
                if len(ready) > n:
                    running = [e for e in events if e.get("event") == "state_change" and e.get("to") == "running"]
                    port = int(running[n]["reason"].rsplit("port ", 1)[1])
                    return ready[n], port
                if not cond.wait(max(0.0, deadline - time.time())):
                    raise SystemExit("timed out waiting for ready")

    crash_to_ready, exit_to_ready = [], []
    try:
        _, port = wait_ready(0)
        for n in range(1, CRASHES + 1):
            sent = time.time()
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(1)  # returns when the process dies
            ready, port = wait_ready(n)
            with cond:
                restarting = [e for e in events if e.get("to") == "restarting"][n - 1]
            crash_to_ready.append((ts(ready) - sent) * 1000)
            exit_to_ready.append((ts(ready) - ts(restarting)) * 1000)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def show(name, xs):
        xs = sorted(xs)
        print(f"{name:22} median {statistics.median(xs):7.2f} ms   min {xs[0]:7.2f}   max {xs[-1]:7.2f}   (n={len(xs)})")
    print(f"crash recovery, testapp, backoff 0 ms, {CRASHES} crashes, {os.cpu_count()} cores")
    show("crash -> ready", crash_to_ready)
    show("exit noticed -> ready", exit_to_ready)


if __name__ == "__main__":
    main()
