"""Print a one-line-per-step summary of an agent.py JSON document read from stdin (for humans)."""
import json, sys
d = json.load(sys.stdin)
print("protocol:", d["protocol"], "| serverInfo:", (d.get("serverInfo") or {}).get("name"), "| connect_error:", d.get("connect_error"), "| notifications:", d.get("notifications"))
for i, r in enumerate(d["results"]):
    if "error" in r and "received" not in r:
        s = "ERROR " + json.dumps(r["error"])
    elif "tools" in r:
        s = "tools: " + ", ".join(t["name"] for t in r["tools"])
    elif "resources" in r:
        s = "resources: " + ", ".join(t["uri"] for t in r["resources"])
    elif "resourceTemplates" in r:
        s = "templates: " + ", ".join(t["uriTemplate"] for t in r["resourceTemplates"])
    elif "prompts" in r:
        s = "prompts: " + ", ".join(t["name"] for t in r["prompts"])
    elif "received" in r:
        s = "await_list_changed: " + json.dumps({k: v for k, v in r.items() if k != "trigger"})
    elif "content" in r:
        txt = " ".join(c.get("text", c.get("type", "")) for c in r["content"])[:90].replace("\n", " ")
        s = f"call isError={r['isError']} text={txt!r}"
        if r.get("structuredContent") is not None: s += " structured=" + json.dumps(r["structuredContent"])[:80]
        if "progress" in r: s += f" progress={r['progress']}"
    else:
        s = json.dumps(r)[:160]
    print(f"  [{i}] {s}")
