"""A real MCP client (the official Python SDK) driven by the Rust tests.

    client.py --http URL | --stdio HARBORMASTER CONFIG  [--mode legacy|auto]  COMMAND

Commands:
  list-call NAME=JSON ...   list the tools, call each NAME with JSON arguments,
                            print one JSON object {protocol, tools, calls}.
  watch                     print {"event": "ready"} once connected, then one JSON
                            line per tools/list_changed; read commands from stdin:
                            "call NAME JSON" (answered with a JSON line), "quit".
  parallel N NAME JSON      N concurrent calls; print the results as one JSON list.
  resources                 list, read and get resources and prompts (namespaced).
  progress NAME JSON        one call with a progress callback; print the
                            progress notifications seen and the result text.
"""

import argparse
import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def target(args):
    if args.http:
        return args.http
    env = None
    if args.env:
        env = dict(os.environ)
        env.update(kv.split("=", 1) for kv in args.env)
    return StdioServerParameters(command=args.stdio[0], args=["mcp", "-c", args.stdio[1]], env=env)


async def call(client, name, arguments):
    try:
        result = await client.call_tool(name, arguments)
        text = "".join(getattr(c, "text", "") for c in result.content)
        return {"name": name, "text": text, "is_error": bool(result.is_error)}
    except MCPError as e:
        return {"name": name, "code": e.code, "message": e.message, "data": e.data}


async def list_call(args):
    async with Client(target(args), mode=args.mode, read_timeout_seconds=60) as client:
        tools = await client.list_tools()
        calls = []
        for spec in args.rest:
            name, _, arguments = spec.partition("=")
            calls.append(await call(client, name, json.loads(arguments or "{}")))
        out({
            "protocol": client.protocol_version,
            "tools": [t.name for t in tools.tools],
            "calls": calls,
        })


async def watch(args):
    async def on_message(message):
        root = getattr(message, "root", message)
        method = getattr(root, "method", None)
        if method == "notifications/tools/list_changed":
            out({"event": "list_changed"})

    async with Client(target(args), mode=args.mode, message_handler=on_message, read_timeout_seconds=60) as client:
        tools = await client.list_tools()
        out({"event": "ready", "tools": [t.name for t in tools.tools]})
        loop = asyncio.get_running_loop()
        pending = set()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                break
            parts = line.strip().split(" ", 2)
            if parts[0] == "call":
                async def one(name=parts[1], arguments=json.loads(parts[2] if len(parts) > 2 else "{}")):
                    r = await call(client, name, arguments)
                    r["event"] = "result"
                    out(r)
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif parts[0] == "list":
                tools = await client.list_tools()
                out({"event": "tools", "tools": [t.name for t in tools.tools]})
        if pending:
            await asyncio.gather(*pending)


async def progress(args):
    name, arguments = args.rest[0], json.loads(args.rest[1])
    seen = []

    async def on_progress(progress, total, message):
        seen.append([progress, total])

    async with Client(target(args), mode=args.mode, read_timeout_seconds=60) as client:
        await client.list_tools()
        result = await client.call_tool(name, arguments, progress_callback=on_progress)
        text = "".join(getattr(c, "text", "") for c in result.content)
        out({"progress": seen, "text": text})


async def resources(args):
    """List resources and prompts; read the first resource, get the first
    prompt that needs no arguments."""
    async with Client(target(args), mode=args.mode, read_timeout_seconds=60) as client:
        res = await client.list_resources()
        first = res.resources[0]
        read = await client.read_resource(first.uri)
        prompts = await client.list_prompts()
        simple = next(p for p in prompts.prompts if not p.arguments)
        got = await client.get_prompt(simple.name)
        out({
            "resources": [str(r.uri) for r in res.resources],
            "read_uri": str(read.contents[0].uri),
            "prompts": [p.name for p in prompts.prompts],
            "prompt_messages": len(got.messages),
        })


async def parallel(args):
    n, name, arguments = int(args.rest[0]), args.rest[1], json.loads(args.rest[2])
    async with Client(target(args), mode=args.mode, read_timeout_seconds=120) as client:
        await client.list_tools()
        out({"event": "ready"})
        results = await asyncio.gather(*(call(client, name, arguments) for _ in range(n)))
        out({"event": "results", "results": results})


def main():
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--http")
    g.add_argument("--stdio", nargs=2, metavar=("HARBORMASTER", "CONFIG"))
    p.add_argument("--mode", default="legacy")
    p.add_argument("--env", action="append", help="K=V for the stdio command's environment")
    p.add_argument("command", choices=["list-call", "watch", "parallel", "progress", "resources"])
    p.add_argument("rest", nargs="*")
    args = p.parse_args()
    asyncio.run({"list-call": list_call, "watch": watch, "parallel": parallel, "progress": progress, "resources": resources}[args.command](args))


if __name__ == "__main__":
    main()
