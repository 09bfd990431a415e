"""Replies that skip the model: the response cache and keyword quick replies.

Both match on a normalized phrase (case, punctuation and spacing do not matter), and both hold
only text: a tool call is never replayed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any


class ResponseCache:
    """Bounded LRU with a TTL: cache key → the text chunks of a completed reply."""

    def __init__(self, *, max_entries: int, ttl_s: float) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()

    def get(self, key: str) -> tuple[str, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, parts = entry
        if expires_at <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return parts

    def put(self, key: str, parts: Sequence[str]) -> None:
        if self._max_entries <= 0 or self._ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic() + self._ttl_s, tuple(parts))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def cache_key(params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str:
    """(model, parameters, normalized conversation): case, spacing and tool call ids do not matter."""
    conversation = []
    for m in messages:
        entry: dict[str, Any] = {"role": m["role"], "content": normalize_phrase(str(m.get("content") or ""))}
        if "tool_calls" in m:
            entry["tool_calls"] = [
                (c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]
            ]
        conversation.append(entry)
    payload = json.dumps({"params": params, "messages": conversation}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def normalize_phrase(text: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", text.casefold()).split())


def match_quick_reply(messages: Sequence[Mapping[str, Any]], quick_replies: Mapping[str, str]) -> str | None:
    """The canned reply when the last user turn is short small talk containing a keyword.

    "Merci !" and "merci beaucoup" match "merci"; "merci, mais j'ai une question" does not
    (at most two words beside the keyword).
    """
    if not quick_replies or not messages or messages[-1]["role"] != "user":
        return None
    said = normalize_phrase(str(messages[-1].get("content") or ""))
    words = said.split()
    for keyword, reply in quick_replies.items():
        n = len(keyword.split())
        if len(words) <= n + 2 and f" {keyword} " in f" {said} ":
            return reply
    return None


def normalize_quick_replies(quick_replies: Mapping[str, str] | None) -> dict[str, str]:
    return {
        normalize_phrase(k): v for k, v in (quick_replies or {}).items() if normalize_phrase(k) and v.strip()
    }
