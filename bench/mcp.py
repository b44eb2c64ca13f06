#!/usr/bin/env python3
"""MCP `tools/call` throughput and latency: direct to the server, through
harbormaster, and through supergateway — all over Streamable HTTP, with the
same upstream (server-everything's `echo`) in one run.

- direct stdio: server-everything over its own stdio, no gateway (the floor:
                harbormaster and supergateway both talk to it this way);
- direct http:  server-everything in its own `streamableHttp` mode;
- harbormaster: `harbormaster run` (release build), HTTP front at /mcp, the
                server as a supervised stdio child; twice: with the audit log
                off (`[audit] enabled = false`) and on (SQLite, the default
                with `[mcp]`), alternated off/on/off/on, best of each kept;
- supergateway: `supergateway --stdio … --outputTransport streamableHttp
                --stateful` (one stdio child per session: its stateless mode
                starts a child per request).

Latency: one client, one keep-alive connection, CALLS sequential calls
(p50/p99). Throughput: CONC clients (threads), each with its own connection
and session, for SECONDS seconds. The client is plain http.client, the same
for all three; it shares the 2 cores with the server and the gateway.

Usage: bench/mcp.py [CALLS=2000] [CONC=8] [SECONDS=10]
Needs: scripts/deps/npm-mcp.sh, and `cargo build --release`.
"""
import http.client, json, os, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CONC = int(sys.argv[2]) if len(sys.argv) > 2 else 8
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 10
NPM = os.path.join(ROOT, "target", "peers", "npm", "node_modules")
EVERYTHING = os.path.join(NPM, "@modelcontextprotocol", "server-everything", "dist", "index.js")
SUPERGATEWAY = os.path.join(NPM, "supergateway", "dist", "index.js")
HARBORMASTER = os.path.join(ROOT, "target", "release", "harbormaster")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Session:
    """One MCP client session over one keep-alive connection."""

    def __init__(self, port, path="/mcp"):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path, self.session, self.next = path, None, 1
        self.rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                "clientInfo": {"name": "bench", "version": "1"}})
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, msg):
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = "2025-11-25"
        self.conn.request("POST", self.path, json.dumps(msg), headers)
        res = self.conn.getresponse()
        self.session = res.getheader("Mcp-Session-Id") or self.session
        body = res.read().decode()
        if res.status >= 300:
            raise RuntimeError(f"{res.status}: {body}")
        if res.getheader("Content-Type", "").startswith("text/event-stream"):
            for line in body.splitlines():
                if line.startswith("data:") and line[5:].strip():
                    m = json.loads(line[5:])
                    if "id" in m:
                        return m
            return None
        return json.loads(body) if body else None

    def rpc(self, method, params):
        msg = {"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}
        self.next += 1
        answer = self.post(msg)
        if not answer or "error" in answer:
            raise RuntimeError(f"{method}: {answer}")
        return answer["result"]

    def echo(self, tool):
        r = self.rpc("tools/call", {"name": tool, "arguments": {"message": "hi"}})
        assert r["content"][0]["text"] == "Echo: hi", r


def measure(name, port, tool):
    s = Session(port)
    for _ in range(50):
        s.echo(tool)  # warm up
    lat = []
    for _ in range(CALLS):
        t = time.perf_counter()
        s.echo(tool)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    count, errors, stop = [0] * CONC, [], time.time() + SECONDS

    def worker(i):
        try:
            w = Session(port)
            while time.time() < stop:
                w.echo(tool)
                count[i] += 1
        except Exception as e:  # counted, not hidden
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONC)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    return {
        "name": name,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[int(len(lat) * 0.99) - 1],
        "calls_per_s": sum(count) / elapsed,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def direct_stdio():
    """The same server over its own stdio, no gateway: the floor. Latency:
    sequential calls; throughput: CONC calls kept in flight on the pipe."""
    proc = subprocess.Popen(["node", EVERYTHING], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True)
    answers, cond, next_id = {}, threading.Condition(), [1]

    def reader():
        for line in proc.stdout:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if "id" in m:
                with cond:
                    answers[m["id"]] = m
                    cond.notify_all()

    threading.Thread(target=reader, daemon=True).start()

    def send(method, params):
        with cond:
            i = next_id[0]
            next_id[0] += 1
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n")
        proc.stdin.flush()
        return i

    def wait(i):
        with cond:
            while i not in answers:
                cond.wait()
            return answers.pop(i)

    def echo():
        r = wait(send("tools/call", {"name": "echo", "arguments": {"message": "hi"}}))
        assert r["result"]["content"][0]["text"] == "Echo: hi", r

    try:
        wait(send("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": {"name": "bench", "version": "1"}}))
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        proc.stdin.flush()
        for _ in range(50):
            echo()
        lat = []
        for _ in range(CALLS):
            t = time.perf_counter()
            echo()
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        count, stop = [0] * CONC, time.time() + SECONDS

        def worker(k):
            while time.time() < stop:
                echo()
                count[k] += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONC)]
        started = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"name": "direct stdio", "p50_ms": statistics.median(lat), "p99_ms": lat[int(len(lat) * 0.99) - 1],
                "calls_per_s": sum(count) / (time.time() - started), "errors": 0, "first_error": None}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()


def run(name, cmd, port, tool, env=None, cwd=None):
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port)
        time.sleep(1.0)  # the gateway starts its stdio server after binding
        return measure(name, port, tool)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def main():
    for path in (EVERYTHING, SUPERGATEWAY):
        if not os.path.exists(path):
            raise SystemExit(f"missing {path}: run scripts/deps/npm-mcp.sh")
    if not os.path.exists(HARBORMASTER):
        raise SystemExit("missing target/release/harbormaster: run cargo build --release")
    work = tempfile.mkdtemp(prefix="hm-bench-mcp-")
    results = []

    results.append(direct_stdio())
    port = free_port()
    results.append(run("direct http", ["node", EVERYTHING, "streamableHttp"], port, "echo", env={"PORT": str(port)}))

    # Audit off and on in the same run, alternated (twice each) so a change
    # in the machine's load hits both; the better of each pair is kept.
    hm_runs = {"off": [], "on": []}
    for audit in ("off", "on", "off", "on"):
        port = free_port()
        run_dir = tempfile.mkdtemp(prefix=f"audit-{audit}-", dir=work)
        cfg = os.path.join(run_dir, "harbormaster.toml")
        off = "[audit]\nenabled = false\n" if audit == "off" else ""
        with open(cfg, "w") as f:
            f.write(f'[gateway]\nlisten = ["127.0.0.1:{port}"]\n[runtime]\nstate_dir = "{run_dir}/state"\n[mcp]\n'
                    f'[mcp.servers.everything]\ncommand = ["node", "{EVERYTHING}"]\nrequired = true\n{off}')
        hm_runs[audit].append(run(f"hm audit {audit}", [HARBORMASTER, "run", "--no-watch", "-c", cfg], port,
                                  "everything__echo", env={"XDG_RUNTIME_DIR": run_dir}, cwd=run_dir))
    for audit in ("off", "on"):
        results.append(max(hm_runs[audit], key=lambda r: r["calls_per_s"]))

    port = free_port()
    results.append(run("supergateway", ["node", SUPERGATEWAY, "--stdio", f"node {EVERYTHING}",
                                        "--outputTransport", "streamableHttp", "--stateful",
                                        "--port", str(port), "--logLevel", "none"], port, "echo"))

    print(f"tools/call echo, {CALLS} sequential calls (latency), {CONC} clients x {SECONDS:g} s (throughput)")
    print(f"{'path':<14} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'errors':>7}")
    for r in results:
        print(f"{r['name']:<14} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['calls_per_s']:>9.0f} {r['errors']:>7}")
        if r["first_error"]:
            print(f"  first error: {r['first_error']}")
    direct, hm_off, hm_on = results[0], results[2], results[3]
    print(f"added p50 through harbormaster, audit on (vs direct stdio): {hm_on['p50_ms'] - direct['p50_ms']:.3f} ms")
    ratio = hm_on["calls_per_s"] / hm_off["calls_per_s"]
    every = ", ".join(f"{r['calls_per_s']:.0f}" for a in ("off", "on") for r in hm_runs[a])
    print(f"audit on / audit off throughput: {ratio:.1%} (goal >= 90%; runs off,off,on,on: {every})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
