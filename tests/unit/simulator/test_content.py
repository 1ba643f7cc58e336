"""Answer text and usage rules (pure)."""

from __future__ import annotations

from server.simulator.content import (
    Finish,
    compose_answer,
    fingerprint,
    input_tokens,
    natural_length,
)
from server.simulator.wire import ChatRequest, Message
from server.tokens import conversation_tokens


def request(text: str, **kwargs: object) -> ChatRequest:
    return ChatRequest(model="gpt-4.1", messages=(Message("user", text),), **kwargs)  # type: ignore[arg-type]


def test_answer_echoes_the_last_user_message_without_directives() -> None:
    chat = ChatRequest(
        model="gpt-4.1",
        messages=(
            Message("user", "earlier question"),
            Message("assistant", "earlier answer"),
            Message("user", "one two [[sim tokens=30]] three four five six seven eight nine"),
        ),
    )
    answer = compose_answer(chat, forced_length=30)
    assert answer.text.startswith(
        'Simulated answer from gpt-4.1 to "one two three four five six seven eight": '
    )
    assert "nine" not in answer.text.split(":")[0]


def test_every_token_is_one_word_and_a_space() -> None:
    answer = compose_answer(request("count me"), forced_length=40)
    assert len(answer.tokens) == 40
    for token in answer.tokens:
        assert token.endswith(" ")
        assert " " not in token[:-1]
    assert answer.finish is Finish.END


def test_same_request_same_answer_and_different_requests_differ() -> None:
    assert compose_answer(request("alpha")) == compose_answer(request("alpha"))
    assert fingerprint(request("alpha")) == fingerprint(request("alpha"))
    lengths = {natural_length(fingerprint(request(f"prompt {i}"))) for i in range(200)}
    assert min(lengths) >= 16
    assert max(lengths) <= 64
    assert len(lengths) > 20  # spread over the range, not a constant


def test_max_tokens_caps_and_reports_length() -> None:
    answer = compose_answer(request("cap me", max_tokens=5), forced_length=20)
    assert len(answer.tokens) == 5
    assert answer.finish is Finish.LENGTH
    uncapped = compose_answer(request("cap me", max_tokens=20), forced_length=20)
    assert uncapped.finish is Finish.END


def test_stop_sequence_cuts_before_its_first_occurrence() -> None:
    answer = compose_answer(request("halt", stop=("zzz", "from gpt")), forced_length=30)
    assert answer.text == "Simulated answer "
    assert answer.tokens == ("Simulated ", "answer ")
    assert answer.finish is Finish.STOP_SEQUENCE
    assert answer.stop_sequence == "from gpt"


def test_stop_sequence_inside_a_token_keeps_the_partial_token() -> None:
    answer = compose_answer(request("halt", stop=("swer",)), forced_length=30)
    assert answer.tokens == ("Simulated ", "an")
    assert answer.stop_sequence == "swer"


def test_stop_sequence_beyond_the_cap_does_not_apply() -> None:
    answer = compose_answer(request("halt", stop=("gpt-4.1",), max_tokens=3), forced_length=30)
    assert answer.finish is Finish.LENGTH
    assert answer.stop_sequence is None


def test_input_tokens_is_the_shared_estimate_including_system_and_directives() -> None:
    chat = ChatRequest(
        model="gpt-4.1",
        system="be brief",
        messages=(Message("user", "hello [[sim tokens=3]]"), Message("assistant", "hi")),
    )
    expected = conversation_tokens(["be brief", "hello [[sim tokens=3]]", "hi"])
    assert input_tokens(chat) == expected
    assert expected == (2 + 4) + (6 + 4) + (1 + 4)


def test_zero_tokens_is_an_empty_answer() -> None:
    answer = compose_answer(request("nothing"), forced_length=0)
    assert answer.tokens == ()
    assert answer.finish is Finish.END
