"""A small stdio MCP server for fault injection (no SDK: every byte is ours).

Speaks the 2025-11-25 handshake (answers server/discover with -32601, like
an older server). Tools:
  echo {message}      -> "Echo: MESSAGE"
  slow {seconds}      -> answers after SECONDS
  hang {}             -> never answers
  cancelled {}        -> the request ids the client cancelled so far
Environment: FAULT_GARBAGE=1 prints non-JSON lines on stdout around every
answer; FAULT_PIDFILE=PATH writes the pid there.
"""

import json
import os
import sys
import threading
import time

lock = threading.Lock()
cancelled = []
garbage = os.environ.get("FAULT_GARBAGE") == "1"

if os.environ.get("FAULT_PIDFILE"):
    with open(os.environ["FAULT_PIDFILE"], "w") as f:
        f.write(str(os.getpid()))


def send(msg):
    with lock:
        if garbage:
            sys.stdout.write("this is not JSON {{{\n")
        sys.stdout.write(json.dumps(msg) + "\n")
        if garbage:
            sys.stdout.write("\x1b[31mcolored log line\x1b[0m\n")
        sys.stdout.flush()


def text(req_id, t):
    send({"jsonrpc": "2.0", "id": req_id, "result": {"content": [{"type": "text", "text": t}]}})


TOOLS = [
    {"name": n, "description": d, "inputSchema": {"type": "object"}}
    for n, d in [("echo", "echo a message"), ("slow", "answer after a while"),
                 ("hang", "never answer"), ("cancelled", "cancelled request ids")]
]


def call(req_id, name, args):
    if name == "echo":
        text(req_id, "Echo: " + str(args.get("message", "")))
    elif name == "slow":
        time.sleep(float(args.get("seconds", 1)))
        text(req_id, "slept")
    elif name == "hang":
        return
    elif name == "cancelled":
        text(req_id, json.dumps(cancelled))
    else:
        send({"jsonrpc": "2.0", "id": req_id, "error": {"code": -32602, "message": "unknown tool " + name}})


def main():
    if garbage:
        sys.stdout.write("starting up... (not JSON)\n")
        sys.stdout.flush()
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        method, req_id = msg.get("method"), msg.get("id")
        params = msg.get("params") or {}
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": req_id, "result": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fault", "version": "1"}}})
        elif method == "notifications/cancelled":
            cancelled.append(params.get("requestId"))
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": req_id, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            threading.Thread(target=call, args=(req_id, params.get("name"), params.get("arguments") or {}), daemon=True).start()
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": req_id, "result": {}})
        elif req_id is not None:
            send({"jsonrpc": "2.0", "id": req_id, "error": {"code": -32601, "message": "Method not found"}})


main()
