"""The data-channel messages, read the way the users' Flutter client reads them.

The client decodes a packet with Dart's `String.fromCharCodes(event.data)`: one byte, one character
(Latin-1, in Python terms), then `jsonDecode`. UTF-8 "é" would arrive as "Ã©"; the messages must read
back equal to what was sent, accents included, through that decoding and through a UTF-8 one.
"""

from __future__ import annotations

import json

import pytest

from eloquence.client_messages import ClientMessages, encode_message

FRENCH = [
    "Je n'arrive pas à regarder le public dans les yeux.",
    "Très bien ! Respirez lentement, faites une pause, et réessayez : ça ira mieux.",
    "Où êtes-vous, François ? « Déjà » fini… l'œuvre est prête, Noël, garçon, naïf, Ève.",
    "Ça vous a plu ? 👍",  # outside the BMP: a surrogate pair once escaped
]


def from_char_codes(packet: bytes) -> str:
    """Dart's `String.fromCharCodes(bytes)`: each byte becomes the character of that code."""
    return "".join(chr(b) for b in packet)


@pytest.mark.parametrize("text", FRENCH)
def test_a_french_message_survives_one_byte_per_character_decoding(text: str) -> None:
    message = {"type": "ai_response", "response": text}
    packet = encode_message(message)
    assert max(packet) < 0x80  # ASCII only: nothing for a byte-per-character reader to garble
    assert json.loads(from_char_codes(packet)) == message
    assert json.loads(packet.decode("utf-8")) == message  # `utf8.decode` reads it the same


def test_utf8_json_is_what_the_client_garbles() -> None:
    # why the escaping matters: the bytes the agent used to send read back wrong in the client
    packet = json.dumps({"response": "é"}, ensure_ascii=False).encode("utf-8")
    assert json.loads(from_char_codes(packet)) == {"response": "Ã©"}


async def test_every_published_message_reads_back_equal_in_the_client() -> None:
    sent: list[bytes] = []

    async def sink(payload: bytes) -> None:
        sent.append(payload)

    messages = ClientMessages(sink=sink)
    messages.transcription("Comment gérer le trac avant une présentation", final=False)
    messages.transcription("Comment gérer le trac avant une présentation ?", final=True)
    messages.ai_response(FRENCH[1])
    messages.metrics({"e2e_ms": 812.5, "interrupted": False})
    await messages.aclose()

    assert len(sent) == 4
    assert [json.loads(from_char_codes(p)) for p in sent] == messages.messages
    assert messages.messages[2] == {"type": "ai_response", "response": FRENCH[1]}


def _turn(messages: ClientMessages, finals: list[str], committed: str) -> list[dict[str, object]]:
    """One user turn as the session reports it: STT finals, then the committed user message."""
    from livekit.agents.llm import ChatMessage
    from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

    start = len(messages.messages)
    for text in finals:
        messages._on_user_input_transcribed(UserInputTranscribedEvent(transcript=text, is_final=True))
    item = ChatMessage(role="user", content=[committed])
    messages._on_conversation_item_added(ConversationItemAddedEvent(item=item))
    return messages.messages[start:]


def test_a_turn_heard_again_as_one_piece_replaces_its_finals() -> None:
    messages = ClientMessages()
    # a pause split the sentence; the STT's whole-turn pass became the user's message (issue 16)
    sent = _turn(
        messages,
        ["I always get nervous when I have to.", "speaking front of my team."],
        "I always get nervous when I have to speak in front of my team.",
    )
    assert sent[-1] == {
        "type": "transcription_revised",
        "text": "I always get nervous when I have to speak in front of my team.",
    }
    # an ordinary turn, said in one piece or split where the words were right, adds nothing
    assert [m["type"] for m in _turn(messages, ["How do I start?"], "How do I start?")] == ["transcription"]
    assert [m["type"] for m in _turn(messages, ["How do I", "start?"], "How do I start?")] == [
        "transcription",
        "transcription",
    ]
