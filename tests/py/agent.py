#!/usr/bin/env python3
"""A generic MCP test agent driven by a JSON plan (python `mcp` SDK 2.3 client).

Usage:
    python tests/py/agent.py --http URL [--header 'Name: value']... [--mode legacy|auto|2026-07-28] < plan.json
    python tests/py/agent.py [--mode ...] [--env K=V]... --stdio -- CMD ARG... < plan.json

All agent options go BEFORE `--`; everything after `--` is the stdio server's command line.
`--plan FILE` reads the plan from FILE instead of stdin.

The plan is a JSON array of steps. Stdout carries exactly ONE JSON document:

    {"protocol": "<negotiated version or null>", "mode": ..., "serverInfo": {...} | null,
     "results": [<one entry per step>], "elicitations": [...]}

plus "connect_error" when the connection/handshake failed (then "results" is empty).
Diagnostics and the stdio server's stderr go to stderr. Exit status: 0 when the plan ran
(whatever the steps returned), 2 for a bad command line or plan, 3 when connecting failed.

Steps (every step may carry "timeout_s", default --timeout; errors never abort the plan):
  {"op":"list_tools"}                  -> {"tools":[...], "pages":n}   (follows nextCursor)
  {"op":"list_tools","cursor":C}       -> one raw page (also with "all":false)
  {"op":"call","name":N,"args":{}}     -> {"isError":b,"content":[...],"structuredContent":...,...}
  {"op":"call_progress","name":N,"args":{}} -> same plus "progress":[[progress,total],...]
  {"op":"list_resources"} / {"op":"list_resource_templates"} / {"op":"list_prompts"}
  {"op":"read","uri":U}  {"op":"prompt","name":N,"args":{}}
  {"op":"complete","ref":{"type":"ref/prompt","name":N}|{"type":"ref/resource","uri":T},
                   "argument":{"name":..,"value":..},"context":{...}?}
  {"op":"await_list_changed","trigger":<step>?,"timeout_s":20,"kind":"tools|prompts|resources"}
        -> {"received":bool,"trigger":<trigger result>|null,"via":"listen"|"message_handler",...}
  {"op":"http","method":"POST","url":U,"headers":{},"json":...|"body":"..."}
        -> {"status":int,"headers":{},"body":str,"json":...|null}   (plain HTTP, e.g. an admin API)
  {"op":"parallel","steps":[<step>...]} -> {"results":[...]}   (run concurrently)
  {"op":"protocol"}                    -> {"protocol":..., "serverInfo":..., "capabilities":...}

A step that fails yields {"error":{"code":int|null,"message":str,"kind":...,"data"?,"type"?}}:
kind "jsonrpc" (JSON-RPC error response, code set), "timeout", "validation", "transport",
"unsupported" or "exception".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

# Anything stray that prints to stdout goes to stderr instead: stdout is the JSON channel.
_REAL_STDOUT = sys.stdout
sys.stdout = sys.stderr

_LIST_PAGE_CAP = 100

_KINDS: dict[str, tuple[str, type, str]] = {
    # kind -> (legacy notification method, modern listen event class, listen() keyword)
    "tools": ("notifications/tools/list_changed", ToolsListChanged, "tools_list_changed"),
    "prompts": ("notifications/prompts/list_changed", PromptsListChanged, "prompts_list_changed"),
    "resources": ("notifications/resources/list_changed", ResourcesListChanged, "resources_list_changed"),
}


def log(msg: str) -> None:
    print(f"[agent] {msg}", file=sys.stderr, flush=True)


def dump(value: Any) -> Any:
    """Pydantic models (and containers of them) -> plain JSON-able data, wire spelling."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    return value


def _unwrap(exc: BaseException) -> BaseException:
    """Reduce single-member exception groups (anyio task groups) to their member."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def error_entry(exc: BaseException) -> dict[str, Any]:
    exc = _unwrap(exc)
    if isinstance(exc, MCPError):
        err: dict[str, Any] = {"code": exc.error.code, "message": exc.error.message, "kind": "jsonrpc"}
        if exc.error.data is not None:
            err["data"] = dump(exc.error.data)
        if exc.error.code == types.REQUEST_TIMEOUT:
            err["kind"] = "timeout"
        return {"error": err}
    if isinstance(exc, TimeoutError):
        kind = "timeout"
    elif isinstance(exc, ValidationError):
        kind = "validation"
    elif isinstance(exc, httpx2.HTTPError | OSError | anyio.BrokenResourceError | anyio.ClosedResourceError):
        kind = "transport"
    elif isinstance(exc, ListenNotSupportedError):
        kind = "unsupported"
    else:
        kind = "exception"
    message = str(exc) or type(exc).__name__
    return {"error": {"code": None, "message": message, "kind": kind, "type": type(exc).__name__}}


class Observer:
    """Counts server notifications (legacy delivery path) and watches HTTP responses."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._changed = anyio.Event()
        self.stream_errors: list[str] = []
        # HTTP only: set once a response carried Mcp-Session-Id / once the standalone GET answered.
        self.session_id_seen = False
        self.get_stream_status: int | None = None
        self.get_stream_answered = anyio.Event()
        self.http_errors: list[dict[str, Any]] = []

    async def message_handler(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.stream_errors.append(f"{type(message).__name__}: {message}")
            log(f"transport error surfaced to message_handler: {message!r}")
            return
        method = getattr(message, "method", None)
        if isinstance(method, str):
            self.counts[method] = self.counts.get(method, 0) + 1
            log(f"notification {method}")
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_count_above(self, method: str, baseline: int) -> None:
        while self.counts.get(method, 0) <= baseline:
            changed = self._changed
            if self.counts.get(method, 0) > baseline:
                return
            await changed.wait()

    async def on_response(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            # The SDK folds HTTP failures into generic JSON-RPC errors; keep the status for the tests.
            entry: dict[str, Any] = {"method": response.request.method, "status": response.status_code}
            if "www-authenticate" in response.headers:
                entry["wwwAuthenticate"] = response.headers["www-authenticate"]
            self.http_errors.append(entry)
        if response.headers.get("mcp-session-id"):
            self.session_id_seen = True
        if response.request.method == "GET" and self.get_stream_status is None:
            self.get_stream_status = response.status_code
            self.get_stream_answered.set()


class Agent:
    def __init__(self, client: Client, observer: Observer, default_timeout: float, http: bool) -> None:
        self.client = client
        self.observer = observer
        self.default_timeout = default_timeout
        self.http = http

    @property
    def modern(self) -> bool:
        return self.client.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def run_step(self, step: Any, index: str) -> dict[str, Any]:
        if not isinstance(step, dict) or not isinstance(step.get("op"), str):
            return {"error": {"code": None, "message": f"bad step (need an object with 'op'): {step!r}",
                              "kind": "plan"}}
        op = step["op"]
        handler: Callable[[dict[str, Any], str], Any] | None = getattr(self, "op_" + op, None)
        if handler is None:
            return {"error": {"code": None, "message": f"unknown op {op!r}", "kind": "plan"}}
        timeout = step.get("timeout_s", self.default_timeout)
        if op == "await_list_changed":
            # timeout_s bounds the wait for the notification; the step as a whole also covers the trigger.
            timeout = float(timeout) + float(self.default_timeout) + 5
        if op == "parallel":
            timeout = None  # each child step has its own bound
        try:
            with anyio.fail_after(timeout):
                return await handler(step, index)
        except TimeoutError:
            log(f"step {index} ({op}) timed out after {timeout}s")
            return {"error": {"code": None, "message": f"step timed out after {timeout}s", "kind": "timeout",
                              "type": "TimeoutError"}}
        except KeyError as exc:
            return {"error": {"code": None, "message": f"step {op!r} lacks field {exc}", "kind": "plan"}}
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result entry
            log(f"step {index} ({op}) failed: {type(exc).__name__}: {exc}")
            return error_entry(exc)

    # ---- listing -------------------------------------------------------------------------

    async def _list(self, step: dict[str, Any], key: str, fetch: Callable[..., Any]) -> dict[str, Any]:
        if "cursor" in step or step.get("all") is False:
            return dump(await fetch(cursor=step.get("cursor"), cache_mode="bypass"))
        items: list[Any] = []
        cursor = None
        pages = 0
        while True:
            page = await fetch(cursor=cursor, cache_mode="bypass")
            pages += 1
            items.extend(dump(getattr(page, key)))
            cursor = page.next_cursor
            if cursor is None or pages >= _LIST_PAGE_CAP:
                break
        out: dict[str, Any] = {key_alias(key): items, "pages": pages}
        if cursor is not None:
            out["nextCursor"] = cursor  # page cap hit
        return out

    async def op_list_tools(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        return await self._list(step, "tools", self.client.list_tools)

    async def op_list_resources(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        return await self._list(step, "resources", self.client.list_resources)

    async def op_list_resource_templates(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        return await self._list(step, "resource_templates", self.client.list_resource_templates)

    async def op_list_prompts(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        return await self._list(step, "prompts", self.client.list_prompts)

    # ---- calls ---------------------------------------------------------------------------

    @staticmethod
    def _call_result(result: Any) -> dict[str, Any]:
        out = dump(result)
        out.setdefault("isError", False)
        out.setdefault("content", [])
        out.setdefault("structuredContent", None)
        return out

    async def op_call(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        result = await self.client.call_tool(step["name"], step.get("args") or {})
        return self._call_result(result)

    async def op_call_progress(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        progress: list[list[Any]] = []
        messages: list[str | None] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append([p, total])
            messages.append(message)

        try:
            result = await self.client.call_tool(step["name"], step.get("args") or {}, progress_callback=on_progress)
            out = self._call_result(result)
        except Exception as exc:  # noqa: BLE001 - keep the progress seen before the failure
            out = error_entry(exc)
        # The SDK runs each progress callback as its own task, so the call can
        # return before callbacks for notifications that arrived ahead of the
        # result have run. Those tasks are already scheduled: yielding lets them
        # run (a scheduling checkpoint, not a timed wait).
        for _ in range(16):
            await anyio.lowlevel.checkpoint()
        out["progress"] = progress
        if any(m is not None for m in messages):
            out["progressMessages"] = messages
        return out

    async def op_read(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        return dump(await self.client.read_resource(step["uri"], cache_mode="bypass"))

    async def op_prompt(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        args = {k: str(v) for k, v in (step.get("args") or {}).items()}
        return dump(await self.client.get_prompt(step["name"], args or None))

    async def op_complete(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        ref_in = step["ref"]
        if ref_in.get("type") == "ref/prompt":
            ref: Any = types.PromptReference.model_validate(ref_in)
        else:
            ref = types.ResourceTemplateReference.model_validate(ref_in)
        argument = {"name": step["argument"]["name"], "value": step["argument"].get("value", "")}
        return dump(await self.client.complete(ref, argument, step.get("context")))

    async def op_protocol(self, _step: dict[str, Any], _i: str) -> dict[str, Any]:
        return {
            "protocol": self.client.protocol_version,
            "serverInfo": dump(self.client.server_info),
            "capabilities": dump(self.client.server_capabilities),
            "instructions": self.client.instructions,
        }

    async def op_parallel(self, step: dict[str, Any], index: str) -> dict[str, Any]:
        steps = step.get("steps") or []
        results: list[dict[str, Any] | None] = [None] * len(steps)

        async def one(j: int, sub: Any) -> None:
            results[j] = await self.run_step(sub, f"{index}.{j}")

        async with anyio.create_task_group() as tg:
            for j, sub in enumerate(steps):
                tg.start_soon(one, j, sub)
        return {"results": results}

    async def op_http(self, step: dict[str, Any], _i: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": step.get("headers") or {}}
        if "json" in step:
            kwargs["json"] = step["json"]
        elif "body" in step:
            kwargs["content"] = str(step["body"]).encode()
        async with httpx2.AsyncClient(timeout=self.default_timeout) as hc:
            resp = await hc.request(step.get("method", "GET"), step["url"], **kwargs)
        try:
            parsed = resp.json()
        except ValueError:
            parsed = None
        return {"status": resp.status_code, "headers": dict(resp.headers), "body": resp.text, "json": parsed}

    # ---- list_changed --------------------------------------------------------------------

    async def op_await_list_changed(self, step: dict[str, Any], index: str) -> dict[str, Any]:
        kind = step.get("kind", "tools")
        if kind not in _KINDS:
            return {"error": {"code": None, "message": f"unknown kind {kind!r}", "kind": "plan"}}
        method, event_cls, listen_kw = _KINDS[kind]
        wait_s = float(step.get("timeout_s", 20))
        trigger = step.get("trigger")
        out: dict[str, Any] = {"received": False, "trigger": None, "kind": kind}

        if self.modern:
            out["via"] = "listen"
            try:
                async with self.client.listen(**{listen_kw: True}) as sub:
                    out["honored"] = dump(sub.honored)
                    self._ready(index)
                    if trigger is not None:
                        out["trigger"] = await self.run_step(trigger, f"{index}.trigger")
                    with anyio.move_on_after(wait_s):
                        async for event in sub:
                            if isinstance(event, event_cls):
                                out["received"] = True
                                break
            except Exception as exc:  # noqa: BLE001 - listen refused, or the stream was lost
                out.update(error_entry(exc))
            return out

        out["via"] = "message_handler"
        if self.http and self.observer.session_id_seen:
            # Legacy HTTP delivers unrelated notifications on the standalone GET stream, which the SDK
            # opens in the background after `initialized`: wait until the server has answered it.
            with anyio.move_on_after(wait_s):
                await self.observer.get_stream_answered.wait()
            out["getStreamStatus"] = self.observer.get_stream_status
        baseline = self.observer.counts.get(method, 0)
        self._ready(index)
        if trigger is not None:
            out["trigger"] = await self.run_step(trigger, f"{index}.trigger")
        with anyio.move_on_after(wait_s):
            await self.observer.wait_count_above(method, baseline)
            out["received"] = True
        return out

    @staticmethod
    def _ready(index: str) -> None:
        # Lets a test that drives the change from outside (no trigger step) know when to act.
        print(f"AGENT-LISTENING step={index}", file=sys.stderr, flush=True)


def key_alias(key: str) -> str:
    return {"resource_templates": "resourceTemplates"}.get(key, key)


@asynccontextmanager
async def http_transport(url: str, headers: dict[str, str], observer: Observer) -> AsyncIterator[Any]:
    async with create_mcp_http_client(headers=headers or None) as hc:
        hc.event_hooks["response"].append(observer.on_response)
        async with streamable_http_client(url, http_client=hc) as streams:
            yield streams


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" in argv:
        cut = argv.index("--")
        own, command = argv[:cut], argv[cut + 1:]
    else:
        own, command = argv, []
    p = argparse.ArgumentParser(description="JSON-plan-driven MCP test agent", usage=__doc__.split("\n\n")[1].split("\n", 1)[1].strip())
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--http", metavar="URL", help="Streamable HTTP endpoint")
    target.add_argument("--stdio", action="store_true", help="launch the command after `--` as a stdio server")
    p.add_argument("--header", action="append", default=[], metavar="'Name: value'", help="HTTP header (repeatable)")
    p.add_argument("--mode", default="auto",
                   help="legacy (2025-11-25 initialize), auto (server/discover, fall back), or a modern version pin")
    p.add_argument("--timeout", type=float, default=60.0, help="default per-step and connect timeout, seconds")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env for the stdio server")
    p.add_argument("--cwd", help="working directory for the stdio server")
    p.add_argument("--plan", help="read the plan from this file instead of stdin")
    p.add_argument("--elicitation", choices=["accept", "decline", "cancel"],
                   help="declare the elicitation capability and answer every request with this action")
    p.add_argument("--elicitation-content", default="{}", help="JSON object sent as content with 'accept'")
    args = p.parse_args(own)
    if args.mode not in ("legacy", "auto", *MODERN_PROTOCOL_VERSIONS):
        p.error(f"--mode must be legacy, auto or one of {list(MODERN_PROTOCOL_VERSIONS)}")
    if args.stdio and not command:
        p.error("--stdio needs a command after `--`")
    if args.http and command:
        p.error("a command after `--` only goes with --stdio")
    return args, command


def emit(doc: dict[str, Any]) -> None:
    _REAL_STDOUT.write(json.dumps(doc, indent=None, sort_keys=False) + "\n")
    _REAL_STDOUT.flush()


async def amain(args: argparse.Namespace, command: list[str], plan: list[Any]) -> int:
    observer = Observer()
    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            raise SystemExit(f"bad --header {h!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()

    if args.http:
        server: Any = http_transport(args.http, headers, observer)
    else:
        env = dict(os.environ)
        for kv in args.env:
            k, _, v = kv.partition("=")
            env[k] = v
        params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=args.cwd)
        server = stdio_client(params, errlog=sys.stderr)

    elicitations: list[Any] = []
    extra: dict[str, Any] = {}
    if args.elicitation:
        content = json.loads(args.elicitation_content) if args.elicitation == "accept" else None

        async def on_elicit(_ctx: Any, params: Any) -> types.ElicitResult:
            elicitations.append(dump(params))
            return types.ElicitResult(action=args.elicitation, content=content)

        extra["elicitation_callback"] = on_elicit

    client = Client(
        server,
        mode=args.mode,
        message_handler=observer.message_handler,
        read_timeout_seconds=args.timeout,
        cache=None,  # every list/read must reach the server
        client_info=types.Implementation(name="tollgate-test-agent", version="0.1.0"),
        **extra,
    )
    doc: dict[str, Any] = {"protocol": None, "mode": args.mode, "serverInfo": None, "results": []}
    results: list[dict[str, Any]] = doc["results"]
    connected = False
    try:
        async with client:
            connected = True
            doc["protocol"] = client.protocol_version
            doc["serverInfo"] = dump(client.server_info)
            log(f"connected: protocol={client.protocol_version} server={doc['serverInfo']}")
            agent = Agent(client, observer, args.timeout, http=bool(args.http))
            for i, step in enumerate(plan):
                results.append(await agent.run_step(step, str(i)))
    except Exception as exc:  # noqa: BLE001 - report whatever ran
        if connected:
            log(f"session failed: {type(exc).__name__}: {exc}")
            doc["fatal"] = error_entry(exc)["error"]
        else:
            log(f"connect failed: {type(exc).__name__}: {exc}")
            doc["connect_error"] = error_entry(exc)["error"]
    doc["elicitations"] = elicitations
    doc["notifications"] = observer.counts
    if observer.stream_errors:
        doc["streamErrors"] = observer.stream_errors
    if observer.http_errors:
        doc["httpErrors"] = observer.http_errors
    emit(doc)
    return 0 if connected else 3


def main() -> int:
    args, command = parse_args(sys.argv[1:])
    try:
        raw = open(args.plan).read() if args.plan else sys.stdin.read()
        plan = json.loads(raw)
        if not isinstance(plan, list):
            raise ValueError("the plan must be a JSON array of steps")
    except (OSError, ValueError) as exc:
        emit({"protocol": None, "results": [], "plan_error": str(exc)})
        return 2
    return anyio.run(amain, args, command, plan)


if __name__ == "__main__":
    sys.exit(main())
