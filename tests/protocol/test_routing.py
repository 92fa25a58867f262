"""Routing keys as existing peers spell them, and RabbitMQ topic matching."""

from __future__ import annotations

import base64
import re
import typing
import uuid
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caroni.protocol import (
    DEFAULT_EXCHANGE,
    FULFILLMENT_KEY,
    agent_key,
    client_key,
    manager_key,
    node_key_id,
    node_uuid_from_key_id,
    topic_matches,
)

KNOWN = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
KNOWN_ID = "ABEiM0RVZneImaq7zN3u_w"  # base64.urlsafe_b64encode(KNOWN.bytes) minus "=="


def test_constants() -> None:
    assert FULFILLMENT_KEY == "wf.agent.fulfillment"
    assert DEFAULT_EXCHANGE == "caroni_exchange"


def test_node_key_id_known_vector() -> None:
    assert base64.urlsafe_b64encode(KNOWN.bytes) == (KNOWN_ID + "==").encode()
    assert node_key_id(KNOWN) == KNOWN_ID
    assert node_uuid_from_key_id(KNOWN_ID) == KNOWN


@settings(max_examples=200)
@given(st.uuids())
def test_node_key_id_shape_and_round_trip(u: uuid.UUID) -> None:
    key_id = node_key_id(u)
    assert len(key_id) == 22
    assert "=" not in key_id
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", key_id)
    assert node_uuid_from_key_id(key_id) == u


def test_node_keys() -> None:
    assert agent_key(KNOWN) == f"wf.agent.{KNOWN_ID}"
    assert manager_key(KNOWN) == f"wf.manager.{KNOWN_ID}"
    assert client_key(KNOWN) == f"wf.client.{KNOWN_ID}"
    # A node's own key never collides with the broadcast key or its binding pattern.
    assert not topic_matches(FULFILLMENT_KEY, agent_key(KNOWN))
    assert topic_matches("wf.agent.*", agent_key(KNOWN))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        KNOWN_ID[:-1],
        KNOWN_ID + "A",
        KNOWN_ID + "==",
        KNOWN_ID[:-1] + "+",  # standard, not URL-safe, alphabet
        KNOWN_ID[:-1] + "/",
        KNOWN_ID[:-1] + "=",
        KNOWN_ID[:-1] + "x",  # unused low bits set: not the canonical spelling
        " " + KNOWN_ID[1:],
        "ABEiM0RVZneImaq7zN3u_w\n",
    ],
)
def test_node_uuid_from_key_id_rejects_bad_input(bad: str) -> None:
    with pytest.raises(ValueError):
        node_uuid_from_key_id(bad)


def test_node_uuid_from_key_id_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        node_uuid_from_key_id(typing.cast(str, KNOWN_ID.encode()))


TOPIC_CASES = [
    # (pattern, routing key, matches)
    ("wf.agent.fulfillment", "wf.agent.fulfillment", True),
    ("wf.agent.fulfillment", "wf.agent.fulfillmentx", False),
    ("wf.agent.fulfillment", "wf.agent", False),
    # '#' alone matches everything, including the empty key
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    # '#' at the start
    ("#.b", "b", True),
    ("#.b", "a.b", True),
    ("#.b", "x.y.b", True),
    ("#.b", "b.c", False),
    ("#.b", "", False),
    # '#' in the middle
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.z.b", True),
    ("a.#.b", "a.b.b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.b", "a", False),
    ("a.#.b", "b.a.b", False),
    # '#' at the end
    ("wf.#", "wf", True),
    ("wf.#", "wf.agent", True),
    ("wf.#", "wf.agent.x.y", True),
    ("wf.#", "wfx", False),
    ("wf.#", "x.wf", False),
    # several '#'
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("a.#.#.b", "a.b", True),
    ("#.a.#", "x.a.y", True),
    ("#.a.#", "x.y", False),
    # '*' matches exactly one word
    ("wf.agent.*", "wf.agent.x", True),
    ("wf.agent.*", "wf.agent", False),
    ("wf.agent.*", "wf.agent.x.y", False),
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("*.b", "a.b", True),
    ("*.b", "b", False),
    # '*' against empty words (keys with leading, trailing or doubled dots)
    ("*", ".", False),
    ("*.*", ".", True),
    ("a.*", "a.", True),
    ("*.a", ".a", True),
    ("a.*.b", "a..b", True),
    ("a.b", "a..b", False),
    # '*' and '#' together
    ("*.#", "", False),
    ("*.#", "a", True),
    ("*.#", "a.b.c", True),
    ("#.*", "a", True),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a.#.*", "a.b.c", True),
    # wildcard characters inside a word are literal
    ("a*", "abc", False),
    ("a*", "a*", True),
    ("a#", "a", False),
    ("a.#b", "a.x.b", False),
    ("a.#b", "a.#b", True),
    # empty pattern and empty key
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), TOPIC_CASES)
def test_topic_matches(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def _reference_matches(pattern: str, key: str) -> bool:
    """A slow, obviously-correct recursive definition to check the fast one against."""
    pat = tuple(pattern.split(".")) if pattern else ()
    words = tuple(key.split(".")) if key else ()

    @cache
    def match(p: int, k: int) -> bool:
        if p == len(pat):
            return k == len(words)
        if pat[p] == "#":
            return match(p + 1, k) or (k < len(words) and match(p, k + 1))
        if k == len(words):
            return False
        return (pat[p] == "*" or pat[p] == words[k]) and match(p + 1, k + 1)

    return match(0, 0)


_WORDS = st.sampled_from(["a", "b", ""])


@settings(max_examples=500)
@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*", "#", ""]), max_size=6).map(".".join),
    key=st.lists(_WORDS, max_size=6).map(".".join),
)
def test_topic_matches_agrees_with_reference(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) is _reference_matches(pattern, key)


def test_topic_matches_many_hashes_is_fast() -> None:
    pattern = ".".join(["#"] * 30 + ["z"])
    key = ".".join(["a"] * 200)
    assert topic_matches(pattern, key) is False
