"""Conversation pseudonyms in the process (`MemoryPseudonyms`) and the policy using them."""

from __future__ import annotations

import orjson

from ktproxy.context import RequestContext
from ktproxy.fleet.pseudonyms import MemoryPseudonyms
from ktproxy.policies.pii_detector import PIIDetector, PIIOptions
from ktproxy.policies.resources import PolicyResources


async def test_one_value_keeps_its_placeholder_within_a_conversation_only() -> None:
    vault = MemoryPseudonyms()
    first = await vault.assign("g", "c1", 60, [("a@x.io", "EMAIL")])
    second = await vault.assign("g", "c1", 60, [("b@x.io", "EMAIL"), ("a@x.io", "EMAIL")])
    assert first == {"<EMAIL_1>": "a@x.io"}
    assert second == {"<EMAIL_1>": "a@x.io", "<EMAIL_2>": "b@x.io"}
    assert await vault.assign("g", "c2", 60, [("b@x.io", "EMAIL")]) == {"<EMAIL_1>": "b@x.io"}
    assert await vault.assign("h", "c1", 60, [("c@x.io", "EMAIL")]) == {"<EMAIL_1>": "c@x.io"}


async def test_a_conversation_expires_ttl_after_its_last_turn() -> None:
    now = [100.0]
    vault = MemoryPseudonyms(clock=lambda: now[0])
    await vault.assign("g", "c", 10, [("a@x.io", "EMAIL")])
    now[0] += 9  # a turn inside the TTL renews it
    assert await vault.assign("g", "c", 10, []) == {"<EMAIL_1>": "a@x.io"}
    now[0] += 10
    assert await vault.assign("g", "c", 10, [("b@x.io", "EMAIL")]) == {"<EMAIL_1>": "b@x.io"}


async def test_the_least_recent_conversation_is_dropped_beyond_the_bound() -> None:
    vault = MemoryPseudonyms(max_conversations=2)
    for name in ("c1", "c2", "c3"):
        await vault.assign("g", name, 60, [(f"{name}@x.io", "EMAIL")])
    assert await vault.assign("g", "c1", 60, []) == {}
    assert await vault.assign("g", "c3", 60, []) == {"<EMAIL_1>": "c3@x.io"}


def _ctx(text: str, headers: dict[str, str]) -> RequestContext:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    ctx = RequestContext("r", "chat", orjson.dumps(body), "m", False, consumer="g")
    ctx.headers = headers
    return ctx


async def test_the_policy_numbers_placeholders_across_requests_of_a_conversation() -> None:
    policy = PIIDetector(PIIOptions(action="pseudonymize", scope="conversation"))
    await policy.start(PolicyResources())
    conv = {"x-kt-conversation-id": "c1"}
    turn1 = _ctx("mail a@x.io", conv)
    await policy.on_request(turn1)
    turn2 = _ctx("mail b@x.io and a@x.io", conv)
    await policy.on_request(turn2)
    other = _ctx("mail b@x.io", {"x-kt-conversation-id": "c2"})
    await policy.on_request(other)
    alone = _ctx("mail b@x.io", {})  # no header: per request
    await policy.on_request(alone)
    assert turn1.body["messages"][0]["content"] == "mail <EMAIL_1>"
    assert turn2.body["messages"][0]["content"] == "mail <EMAIL_2> and <EMAIL_1>"
    assert other.body["messages"][0]["content"] == "mail <EMAIL_1>"
    assert alone.body["messages"][0]["content"] == "mail <EMAIL_1>"
    # a reply naming a placeholder of an earlier turn is restored
    reply = {"choices": [{"message": {"role": "assistant", "content": "to <EMAIL_1>"}}]}
    assert policy.on_response(turn2, reply)
    assert reply["choices"][0]["message"]["content"] == "to a@x.io"
