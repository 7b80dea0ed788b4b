"""The server's side of a xiaozhi device's MCP server (JSON-RPC 2.0 inside ``mcp`` messages),
sans-I/O: payloads in, payloads out.

After the hello the server sends ``initialize``; on its result, ``notifications/initialized``
and ``tools/list`` (paged with ``nextCursor``, as the firmware caps a reply at 8000 bytes). Tools
then reach the LLM under names OpenAI-style APIs accept (``self.audio_speaker.set_volume`` →
``self_audio_speaker_set_volume``), and a call goes back as ``tools/call``. Rules from the
firmware: ids must be numbers (it drops a request with any other id), its error objects have no
``code``, and ``initialize`` must carry ``capabilities.vision`` (xiaozhi-sdk reads its ``url``
and ``token`` unconditionally; voxgate has no image endpoint, so both are empty).

A device is asked for at most :data:`MAX_LIST_PAGES` pages and keeps at most :data:`MAX_TOOLS`
tools (the firmware has about 15): one that keeps sending ``nextCursor`` is not asked forever.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = "2024-11-05"
CLIENT_NAME = "voxgate"
_LLM_NAME = re.compile(r"[^A-Za-z0-9_-]")
MAX_LIST_PAGES = 10
MAX_TOOLS = 64


@dataclass(frozen=True, slots=True)
class DeviceTool:
    name: str
    """As the device names it (``self.audio_speaker.set_volume``)."""
    description: str
    input_schema: dict[str, Any]
    llm_name: str
    """As the LLM is offered it: letters, digits, ``_`` and ``-`` only, at most 64."""


@dataclass(frozen=True, slots=True)
class CallResult:
    """The device's answer to ``tools/call`` ``request_id``."""

    request_id: int
    text: str
    is_error: bool


@dataclass
class McpStep:
    """What one device payload leads to."""

    send: list[dict[str, Any]] = field(default_factory=list)
    """Payloads for the device, in order."""
    result: CallResult | None = None
    tools_ready: bool = False
    """The tool list is complete (``tools``)."""
    dropped: list[str] = field(default_factory=list)
    """Tools this page listed over :data:`MAX_TOOLS` (not offered)."""
    cut_short: bool = False
    """The device had more pages but was not asked for them (the page or tool cap)."""


def llm_name(name: str) -> str:
    return _LLM_NAME.sub("_", name)[:64]


class McpClient:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, str] = {}  # request id -> method
        self.tools: list[DeviceTool] = []
        self._named: dict[str, DeviceTool] = {}  # by device name and by LLM name
        self._pages = 0
        self.ready = False

    def initialize(self) -> dict[str, Any]:
        return self._request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"vision": {"url": "", "token": ""}},
                "clientInfo": {"name": CLIENT_NAME, "version": "1"},
            },
        )

    def call(self, tool: DeviceTool, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A ``tools/call`` of ``tool``: its request id and the payload to send."""
        payload = self._request("tools/call", {"name": tool.name, "arguments": arguments})
        return payload["id"], payload

    def forget(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (a call that timed out): a late answer is ignored."""
        self._waiting.pop(request_id, None)

    def tool_named(self, name: str) -> DeviceTool | None:
        """The tool by its device name or its LLM name."""
        return self._named.get(name)

    def receive(self, payload: dict[str, Any]) -> McpStep:
        """A payload from the device. Anything that answers no request of ours is ignored (the
        firmware sends no requests of its own)."""
        request_id = payload.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            return McpStep()
        method = self._waiting.pop(request_id, None)
        if method is None:
            return McpStep()
        error = payload.get("error")
        result = payload.get("result")
        if method == "tools/call":
            return McpStep(result=_call_result(request_id, result, error))
        if error is not None or not isinstance(result, dict):
            # No tools from a device that fails to list them; the session goes on without.
            self.ready = True
            return McpStep(tools_ready=True)
        if method == "initialize":
            notified = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            return McpStep(send=[notified, self._request("tools/list", {"cursor": ""})])
        return self._listed(result)

    def _listed(self, result: dict[str, Any]) -> McpStep:
        self._pages += 1
        dropped: list[str] = []
        tools = result.get("tools")
        for item in tools if isinstance(tools, list) else []:
            tool = _tool(item)
            # Two names the LLM would see as one are one tool (the first listed).
            if tool is None or tool.name in self._named or tool.llm_name in self._named:
                continue
            if len(self.tools) >= MAX_TOOLS:
                dropped.append(tool.name)
                continue
            self.tools.append(tool)
            self._named[tool.name] = self._named[tool.llm_name] = tool
        cursor = result.get("nextCursor")
        more = isinstance(cursor, str) and bool(cursor)
        if more and self._pages < MAX_LIST_PAGES and len(self.tools) < MAX_TOOLS:
            request = self._request("tools/list", {"cursor": cursor})
            return McpStep(send=[request], dropped=dropped)
        self.ready = True
        return McpStep(tools_ready=True, dropped=dropped, cut_short=more)

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        self._waiting[request_id] = method
        return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def _tool(item: object) -> DeviceTool | None:
    """A tool the LLM may call, or None (malformed, or for the user only: the firmware marks
    those ``annotations.audience = ["user"]``)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    annotations = item.get("annotations")
    if isinstance(annotations, dict) and annotations.get("audience") == ["user"]:
        return None
    schema = item.get("inputSchema")
    description = item.get("description")
    return DeviceTool(
        name=item["name"],
        description=description if isinstance(description, str) else "",
        input_schema=schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
        llm_name=llm_name(item["name"]),
    )


def _call_result(request_id: int, result: object, error: object) -> CallResult:
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else None
        return CallResult(request_id, str(message or error), is_error=True)
    if not isinstance(result, dict):
        return CallResult(request_id, "the device sent no result", is_error=True)
    content = result.get("content")
    parts = content if isinstance(content, list) else []
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]
    text = "\n".join(texts) if texts else json.dumps(result, ensure_ascii=False)
    return CallResult(request_id, text, is_error=result.get("isError") is True)
