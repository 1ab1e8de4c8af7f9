"""The official `openai` Python client against tollgate's /v1/chat/completions.

Run by tests/it/llm.rs (the_openai_python_client_is_answered_and_governed):
  python openai_client.py --base-url http://127.0.0.1:PORT/v1 --key tg_... --broke-key tg_...
Prints one JSON report: a plain completion, a streamed one, a call refused by a
grant (model "dear") and a call refused by an exhausted budget (the broke key).
"""

import argparse
import json

import openai
from openai import OpenAI


def failure(e: Exception) -> dict:
    body = getattr(e, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    return {"error": type(e).__name__, "status": getattr(e, "status_code", None), "code": code}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--broke-key", required=True)
    a = ap.parse_args()
    client = OpenAI(base_url=a.base_url, api_key=a.key, max_retries=0, timeout=30)
    report = {"models": sorted(m.id for m in client.models.list())}

    r = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hello from python"}], max_tokens=50
    )
    report["plain"] = {
        "text": r.choices[0].message.content,
        "finish_reason": r.choices[0].finish_reason,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
    }

    text, chunks, usage_total = "", 0, None
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "streaming now please"}],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage_total = chunk.usage.total_tokens
    report["stream"] = {"text": text, "chunks": chunks, "usage_total": usage_total}

    try:
        client.chat.completions.create(model="dear", messages=[{"role": "user", "content": "x"}], max_tokens=5)
        report["denied"] = {"error": None}
    except openai.APIStatusError as e:
        report["denied"] = failure(e)

    broke = OpenAI(base_url=a.base_url, api_key=a.broke_key, max_retries=0, timeout=30)
    try:
        broke.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}], max_tokens=50)
        report["broke"] = {"error": None}
    except openai.APIStatusError as e:
        report["broke"] = failure(e)

    print(json.dumps(report))


if __name__ == "__main__":
    main()
