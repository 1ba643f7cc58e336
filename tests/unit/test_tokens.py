from server.tokens import conversation_tokens, text_tokens


def test_text_tokens_are_utf8_bytes_over_four_rounded_up():
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    # Korean syllables are 3 bytes each: 4 syllables = 12 bytes = 3 tokens.
    assert text_tokens("분석해줘") == 3


def test_conversation_adds_four_per_message():
    assert conversation_tokens(["abcd", "abcdefgh"]) == (1 + 4) + (2 + 4)
    assert conversation_tokens([]) == 0
