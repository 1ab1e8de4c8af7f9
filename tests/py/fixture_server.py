#!/usr/bin/env python3
"""A tiny dual-era MCP server (python `mcp` 2.3 MCPServer) whose tool list can change on demand.

    python tests/py/fixture_server.py                 # stdio
    python tests/py/fixture_server.py --http [PORT]   # Streamable HTTP on 127.0.0.1 (PORT 0/absent = ephemeral)

In HTTP mode exactly one line goes to stdout once the socket accepts connections:
    LISTENING http://127.0.0.1:<port>/mcp
(all logging goes to stderr), so a test waits for that line instead of sleeping.

The era is chosen by the client: `initialize` -> 2025-11-25 session, `server/discover` or a
2026-07-28 envelope -> modern stateless. It exists because neither third-party server can change
its tool list after start-up, which the list_changed tests need:

Tools:     echo(message) -> "fixture echo: <message>"
           add_tool(name) -> registers tool <name> (an echo) and announces notifications/tools/list_changed
                             (legacy: on the session; modern: to subscriptions/listen streams)
           remove_tool(name) -> the reverse
           progress(steps) -> reports progress 1..steps of steps, then "done <steps>"
Resource:  fixture://hello (text/plain "hello from fixture")
Prompt:    greet(name)
"""

from __future__ import annotations

import argparse
import socket
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

server = MCPServer("tollgate-fixture", version="0.1.0")


async def _announce_tools_changed(ctx: Context) -> None:
    # Modern listeners are fed through the subscription bus; a legacy session gets the notification itself.
    await ctx.notify_tools_changed()
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        await ctx.session.send_tool_list_changed()


@server.tool(description="Echo the message back")
def echo(message: str) -> str:
    return f"fixture echo: {message}"


@server.tool(description="Register a new echo tool called `name` and announce tools/list_changed")
async def add_tool(name: str, ctx: Context) -> str:
    def dynamic(message: str) -> str:
        return f"{name}: {message}"

    server.add_tool(dynamic, name=name, description=f"dynamic tool {name}")
    await _announce_tools_changed(ctx)
    return f"added {name}"


@server.tool(description="Remove tool `name` and announce tools/list_changed")
async def remove_tool(name: str, ctx: Context) -> str:
    server.remove_tool(name)
    await _announce_tools_changed(ctx)
    return f"removed {name}"


@server.tool(description="Report progress 1..steps (of steps), then return")
async def progress(steps: int, ctx: Context) -> str:
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps)
    return f"done {steps}"


@server.resource("fixture://hello", mime_type="text/plain")
def hello() -> str:
    return "hello from fixture"


@server.prompt(description="Greet someone")
def greet(name: str) -> str:
    return f"Please greet {name}."


async def serve_http(port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                sys.__stdout__.write(f"LISTENING {url}\n")
                sys.__stdout__.flush()

    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await AnnouncingServer(config).serve(sockets=[sock])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--http", nargs="?", const=0, type=int, metavar="PORT", help="serve Streamable HTTP instead of stdio")
    args = p.parse_args()
    if args.http is None:
        anyio.run(server.run_stdio_async)
    else:
        sys.stdout = sys.stderr  # stdout carries only the LISTENING line
        anyio.run(serve_http, args.http)


if __name__ == "__main__":
    main()
