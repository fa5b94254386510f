"""The verdicts of the load test: what a correct answer of the gateway looks like.

Each check raises `Failed` with a message for locust's failure report when what came
back is wrong, and returns the reply's text where there is one. They are plain
functions with no locust in sight, so the test suite can run them without locust.
"""

from __future__ import annotations

import orjson

from loadtests.workload import PII_VALUES, redacted_pattern

DONE = b"data: [DONE]"


class Failed(Exception):
    """A response that is not what the gateway should have sent; the message says why."""


def error_of(body: bytes) -> str:
    """A short description of an error body, for a failure message."""
    try:
        error = orjson.loads(body)["error"]
        return f"{error.get('code')}: {error.get('message')}"
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return repr(body[:200])


def check_completion(status: int, body: bytes) -> str:
    """The assistant text of a 200 `chat.completion`; raise `Failed` for anything else."""
    if status != 200:
        raise Failed(f"HTTP {status}: {error_of(body)}")
    try:
        data = orjson.loads(body)
        content = data["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise Failed(f"not a chat completion ({type(exc).__name__}): {body[:200]!r}") from None
    if data.get("object") != "chat.completion" or not isinstance(content, str) or not content:
        raise Failed(f"not a chat completion with text: {body[:200]!r}")
    return content


def check_stream(raw: bytes) -> str:
    """The text of a complete SSE chat stream; raise `Failed` unless it ends with [DONE]."""
    events_ = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    if not events_:
        raise Failed("empty stream")
    if events_[-1].strip() != DONE:
        raise Failed(f"stream does not end with data: [DONE] (ends {raw[-80:]!r})")
    text: list[str] = []
    for event in events_[:-1]:
        if not event.startswith(b"data: "):
            raise Failed(f"not a data event: {event[:120]!r}")
        try:
            chunk = orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            raise Failed(f"event is not JSON: {event[:120]!r}") from None
        if not isinstance(chunk, dict) or "error" in chunk:
            raise Failed(f"error event in the stream: {event[:200]!r}")
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if isinstance(piece, str):
                text.append(piece)
    if not text or not "".join(text):
        raise Failed("stream carried no text")
    return "".join(text)


def check_redacted(reply: str, prompt: str, values: tuple[str, ...]) -> None:
    """Raise `Failed` if a PII value came back or the echo is not the redacted prompt."""
    for value in PII_VALUES:
        if value in reply:
            raise Failed(f"PII value in the reply: {value!r}")
    if not redacted_pattern(prompt, values).fullmatch(reply):
        raise Failed(f"reply is not the prompt with its values redacted: {reply[:200]!r}")


def check_blocked(status: int, body: bytes) -> None:
    """Raise `Failed` unless this is the 422 `policy_violation` of `prompt-injection`."""
    if status != 422:
        raise Failed(f"injection not blocked: HTTP {status}: {body[:200]!r}")
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Failed(f"422 without an OpenAI error body: {body[:200]!r}") from None
    shaped = (
        isinstance(error, dict)
        and error.get("type") == "policy_violation"
        and isinstance(error.get("message"), str)
        and bool(error["message"])
        and isinstance(error.get("code"), str)
        and "param" in error
        and error.get("policy") == "prompt-injection"
    )
    if not shaped:
        raise Failed(f"422 body is not a prompt-injection policy_violation: {body[:200]!r}")
