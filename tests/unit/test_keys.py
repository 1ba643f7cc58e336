"""API keys: their shape, what is stored of them, and how a presented secret is checked."""

from server.keys import ApiKey, digest, matches, new_key_id, new_secret, parse, token

NOW = 1_800_000_000.0


def test_a_new_key_reads_sy_id_secret_with_256_random_bits():
    key_id, secret = new_key_id(), new_secret()
    whole = token(key_id, secret)
    assert whole.startswith(f"sy-{key_id}-") and len(key_id) == 12
    assert len(secret) == 43  # 32 bytes of URL-safe base64, unpadded
    assert parse(whole) == (key_id, secret)
    assert len({new_secret() for _ in range(100)}) == 100


def test_only_well_formed_keys_parse():
    good = token("0123456789ab", "A" * 43)
    assert parse(good) is not None
    for bad in ("", "sy-", good[:-1], good + "x", good.replace("sy-", "sk-"), "Bearer " + good,
                good.upper(), good.replace("-", "_", 1), "sy-0123456789ab-" + "A" * 42 + "!"):  # fmt: skip
        assert parse(bad) is None, bad


def test_the_store_keeps_a_hash_and_repr_shows_neither_secret_nor_hash():
    secret = new_secret()
    key = ApiKey("0123456789ab", "search", "prod", digest(secret), previous_hash=digest("old"))
    assert key.secret_hash == digest(secret) != secret and len(key.secret_hash) == 64
    assert secret not in repr(key) and key.secret_hash not in repr(key)
    assert "previous_hash" not in repr(key) and "0123456789ab" in repr(key)


def test_the_current_secret_matches_and_another_does_not():
    secret = new_secret()
    key = ApiKey("0123456789ab", "search", secret_hash=digest(secret))
    assert matches(key, secret, NOW)
    assert not matches(key, new_secret(), NOW)
    assert not matches(key, secret[:-1], NOW)


def test_the_previous_secret_matches_until_its_grace_ends():
    old, new = new_secret(), new_secret()
    key = ApiKey(
        "0123456789ab", "search", secret_hash=digest(new), previous_hash=digest(old),
        previous_until=NOW + 60,
    )  # fmt: skip
    assert matches(key, new, NOW) and matches(key, old, NOW + 59.9)
    assert not matches(key, old, NOW + 60)
    assert matches(key, new, NOW + 3600)


def test_a_key_is_revoked_or_expired_from_its_instant_on():
    key = ApiKey("0123456789ab", "search", expires_at=NOW + 10)
    assert key.state(NOW) == "active" and key.state(NOW + 10) == "expired"
    revoked = ApiKey("0123456789ab", "search", expires_at=NOW + 10, revoked_at=NOW + 5)
    assert revoked.state(NOW + 4) == "active"
    assert revoked.state(NOW + 5) == revoked.state(NOW + 11) == "revoked"
