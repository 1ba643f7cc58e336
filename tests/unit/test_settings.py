from decimal import Decimal

import pytest

from server.domain import Task
from server.settings import ConfigError, load_settings, parse_listen
from server.settings.database import redact
from server.settings.validation import database_target


def write(tmp_path, text):
    path = tmp_path / "switchyard.toml"
    path.write_text(text)
    return {"SWITCHYARD_CONFIG": str(path)}


def test_defaults_match_the_catalog_of_the_founding_issue():
    settings = load_settings({})
    assert settings.server.listen == "127.0.0.1:50051"
    assert settings.relay.url is None
    assert (settings.limits.relay_rpm, settings.limits.relay_burst) == (500, 50)
    catalog = settings.catalog
    assert {task: model.name for task, model in catalog.task_models.items()} == {
        Task.REASONING: "claude-sonnet-4-20250514",
        Task.CREATIVE: "gpt-4.1",
        Task.FAST: "gemini-2.5-flash",
        Task.BATCH: "deepseek-v3.2",
    }
    claude = catalog.models["claude-sonnet-4-20250514"]
    assert (claude.wire, claude.max_concurrent, claude.default_max_tokens) == (
        "anthropic",
        10,
        8192,
    )
    assert claude.fallbacks == ("gpt-4.1", "gemini-2.5-flash")
    assert catalog.models["gemini-2.5-flash"].input_price == Decimal("2.50")


def test_environment_overrides():
    settings = load_settings(
        {
            "SWITCHYARD_LISTEN": "0.0.0.0:6000",
            "SWITCHYARD_AUTH": "none",  # said explicitly: any address may then be served
            "SWITCHYARD_RELAY_URL": "https://relay.example/v1",
            "SWITCHYARD_RELAY_API_KEY": "secret",
            "SWITCHYARD_RELAY_RPM": "1000",
            "SWITCHYARD_SIM_LATENCY_SCALE": "0",
            "PATH": "/bin",  # other variables are not ours to judge
        }
    )
    assert settings.server.listen == "0.0.0.0:6000"
    assert settings.relay.url == "https://relay.example/v1"
    assert settings.limits.relay_rpm == 1000
    assert settings.simulator.latency_scale == 0.0
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SWITCHYARD_LISTNE": "x"}, "SWITCHYARD_LISTNE"),
        ({"SWITCHYARD_LISTEN": "nope"}, "SWITCHYARD_LISTEN"),
        ({"SWITCHYARD_LISTEN": "127.0.0.1:99999"}, "SWITCHYARD_LISTEN"),
        ({"SWITCHYARD_RELAY_RPM": "many"}, "SWITCHYARD_RELAY_RPM"),
        ({"SWITCHYARD_RELAY_RPM": "0"}, "SWITCHYARD_RELAY_RPM"),
        ({"SWITCHYARD_RELAY_URL": "relay:8080"}, "SWITCHYARD_RELAY_URL"),
        ({"SWITCHYARD_RELAY_URL": "http://relay/v1"}, "SWITCHYARD_RELAY_API_KEY"),
        ({"SWITCHYARD_LOG_LEVEL": "LOUD"}, "SWITCHYARD_LOG_LEVEL"),
        ({"SWITCHYARD_CONFIG": "/nonexistent/switchyard.toml"}, "SWITCHYARD_CONFIG"),
    ],
)
def test_bad_environment_names_the_key(env, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.key == key
    assert str(caught.value).startswith(key)


def test_toml_changes_a_price_exactly_and_adds_a_model(tmp_path):
    env = write(
        tmp_path,
        """
[models."gpt-4.1"]
input_price = 7.125

[models."mistral-large"]
task = "creative"
provider = "mistral"
wire = "openai"
input_price = 2
output_price = 6
max_concurrent = 4
fallbacks = ["gpt-4.1"]
default_max_tokens = 2048
context_window = 128000

[routing.tasks]
creative = "mistral-large"

[limits]
relay_rpm = 60
""",
    )
    settings = load_settings(env)
    assert settings.catalog.models["gpt-4.1"].input_price == Decimal("7.125")
    assert settings.catalog.models["gpt-4.1"].price.input_nanos == 7125
    assert settings.catalog.task_models[Task.CREATIVE].name == "mistral-large"
    assert settings.limits.relay_rpm == 60


def test_toml_can_remove_a_model_but_not_leave_a_task_without_one(tmp_path):
    env = write(tmp_path, '[models."deepseek-v3.2"]\nenabled = false\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.key == "SWITCHYARD_CONFIG routing.tasks.batch"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[models."gpt-4.1"]\ninput_prize = 1\n', "SWITCHYARD_CONFIG models.gpt-4.1.input_prize"),
        (
            '[models."gpt-4.1"]\ninput_price = 0.0001\n',
            "SWITCHYARD_CONFIG models.gpt-4.1.input_price/output_price/cached_input_price",
        ),
        ('[models."gpt-4.1"]\nwire = "grpc"\n', "SWITCHYARD_CONFIG models.gpt-4.1.wire"),
        (
            '[models."gpt-4.1"]\nfallbacks = ["gpt-9"]\n',
            "SWITCHYARD_CONFIG models.gpt-4.1.fallbacks",
        ),
        (
            '[models."new-model"]\ntask = "fast"\n',
            "SWITCHYARD_CONFIG models.new-model.context_window",
        ),
        ('[models."gpt-4.1"]\ntask = "poetry"\n', "SWITCHYARD_CONFIG models.gpt-4.1.task"),
        ("[limits]\nrelay_rpm = 1.5\n", "SWITCHYARD_CONFIG limits.relay_rpm"),
        ("[limitz]\n", "SWITCHYARD_CONFIG [limitz]"),
        ('[relay]\napi_key = "sk"\n', "SWITCHYARD_CONFIG relay.api_key"),
        ('[routing.tasks]\nfast = "gpt-9"\n', "SWITCHYARD_CONFIG routing.tasks.fast"),
        ("not toml ===", "SWITCHYARD_CONFIG"),
        # cost settings: budgets, cache, tasks
        ('[budgets]\nday = "1.0000000001"\n', "SWITCHYARD_CONFIG budgets.day"),
        ('[budgets]\nday = "-1"\n', "SWITCHYARD_CONFIG budgets.day"),
        ('[budgets]\nday = "lots"\n', "SWITCHYARD_CONFIG budgets.day"),
        ('[budgets]\nweek = "1"\n', "SWITCHYARD_CONFIG budgets.week"),
        ("[budgets]\ndowngrade_at = 1.5\n", "SWITCHYARD_CONFIG budgets.downgrade_at"),
        ('[budgets."svc"]\nyear = "1"\n', 'SWITCHYARD_CONFIG budgets."svc".year'),
        ("[cache]\nttl = 0\n", "SWITCHYARD_CACHE_TTL"),
        ("[cache]\nsize = 1\n", "SWITCHYARD_CONFIG cache.size"),
        ('[models."gpt-4.1"]\ntasks = "fast"\n', "SWITCHYARD_CONFIG models.gpt-4.1.tasks"),
        ('[models."gpt-4.1"]\ntasks = ["poetry"]\n', "SWITCHYARD_CONFIG models.gpt-4.1.tasks"),
    ],
)
def test_bad_toml_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key


def test_parse_listen():
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:50051") == ("::1", 50051)


def test_the_cli_s_own_variables_do_not_stop_the_gateway():
    settings = load_settings(
        {
            "SWITCHYARD_CALLER": "search",
            "SWITCHYARD_API_KEY": "client-key",
            "SWITCHYARD_ADDRESS": "127.0.0.1:50051",
        }
    )
    assert settings.server.listen == "127.0.0.1:50051"  # defaults: nothing was taken from them
    with pytest.raises(ConfigError):
        load_settings({"SWITCHYARD_CALLERS": "search"})  # a near miss is still refused


# --- cost settings: cached-input prices, tasks served, cache, budgets ----------------


def test_cost_defaults():
    settings = load_settings({})
    assert settings.cache.enabled and settings.cache.ttl == 3600.0
    assert (settings.cache.max_entries, settings.cache.max_bytes) == (10_000, 64 * 1024 * 1024)
    assert not settings.budgets.callers and settings.budgets.downgrade_at is None
    gpt = settings.catalog.models["gpt-4.1"]
    assert gpt.cached_input_price == Decimal(2) and gpt.serves(Task.REASONING)


def test_budgets_cache_and_cached_prices_from_toml(tmp_path):
    env = write(
        tmp_path,
        """
[cache]
ttl = 60
max_entries = 5

[budgets]
day = "1.50"
downgrade_at = 0.8

[budgets."billing-svc"]
day = "5.00"
month = 100

[models."gpt-4.1"]
cached_input_price = "0.5"
tasks = ["reasoning"]
""",
    )
    settings = load_settings({**env, "SWITCHYARD_CACHE_MAX_BYTES": "4096"})
    assert (settings.cache.ttl, settings.cache.max_entries, settings.cache.max_bytes) == (
        60.0,
        5,
        4096,
    )
    budgets = settings.budgets
    assert budgets.limits("anyone").day == 1_500_000_000 and budgets.limits("anyone").month is None
    billing = budgets.limits("billing-svc")
    assert (billing.day, billing.month) == (5_000_000_000, 100_000_000_000)
    assert budgets.downgrade_at == Decimal("0.8")
    gpt = settings.catalog.models["gpt-4.1"]
    assert gpt.price.cached_input_nanos == 500 and gpt.tasks == (Task.REASONING,)


def test_a_new_model_may_leave_out_the_optional_cost_keys(tmp_path):
    env = write(
        tmp_path,
        """
[models."mistral-large"]
task = "creative"
provider = "mistral"
wire = "openai"
input_price = 2
output_price = 6
max_concurrent = 4
fallbacks = ["gpt-4.1"]
default_max_tokens = 2048
context_window = 128000
""",
    )
    model = load_settings(env).catalog.models["mistral-large"]
    assert model.cached_input_price is None and model.price.cached_input_nanos is None
    assert model.tasks == ()


def test_bad_cache_environment_names_the_variable():
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHYARD_CACHE_MAX_ENTRIES": "0"})
    assert caught.value.key == "SWITCHYARD_CACHE_MAX_ENTRIES"


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        ("", "sqlite", "data/ledger.db"),
        ("memory", "memory", None),
        ("sqlite:///spend.db", "sqlite", "spend.db"),
        ("sqlite:////var/lib/switchyard/ledger.db", "sqlite", "/var/lib/switchyard/ledger.db"),
        ("postgresql://svc@db.internal:5432/ledger", "postgresql", None),
        ("postgres://svc:pw@db.internal/ledger?sslmode=require", "postgresql", None),
    ],
)
def test_database_urls(url, kind, where):
    settings = load_settings({"SWITCHYARD_DATABASE_URL": url, "SWITCHYARD_DATA_DIR": "data"})
    target = database_target(settings)
    assert target.kind == kind
    if where is not None:
        assert str(target.path) == where
    assert "pw" not in target.shown and "pw" not in repr(target) and "pw" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://svc:hunter2@db/ledger",
        "postgresql://svc:hunter2@db.internal:99999/ledger",
        "postgresql://svc:hunter2@/ledger",
        "postgresql://:hunter2@db/ledger",
        "sqlite://relative.db",
    ],
)
def test_a_malformed_database_url_names_the_variable_and_never_the_password(url):
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHYARD_DATABASE_URL": url})
    assert caught.value.key == "SWITCHYARD_DATABASE_URL"
    assert "hunter2" not in str(caught.value)


def test_a_database_password_does_not_belong_in_a_file(tmp_path):
    text = '[ledger]\ndatabase_url = "postgresql://svc:hunter2@db/ledger"\n'
    with pytest.raises(ConfigError, match="set SWITCHYARD_DATABASE_URL instead") as caught:
        load_settings(write(tmp_path, text))
    assert "hunter2" not in str(caught.value)
    ok = load_settings(write(tmp_path, '[ledger]\ndatabase_url = "postgresql://svc@db/ledger"\n'))
    assert database_target(ok).kind == "postgresql"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SWITCHYARD_REDIS_URL": "http://svc:hunter2@cache:6379/0"}, "SWITCHYARD_REDIS_URL"),
        ({"SWITCHYARD_REDIS_URL": "cache:6379"}, "SWITCHYARD_REDIS_URL"),
        ({"SWITCHYARD_REDIS_TIMEOUT": "0"}, "SWITCHYARD_REDIS_TIMEOUT"),
        ({"SWITCHYARD_REDIS_TIMEOUT": "30"}, "SWITCHYARD_REDIS_TIMEOUT"),
        ({"SWITCHYARD_REPLICAS": "0"}, "SWITCHYARD_REPLICAS"),
        ({"SWITCHYARD_REDIS_LEASE_TTL": "1"}, "SWITCHYARD_REDIS_LEASE_TTL"),
    ],
)
def test_bad_redis_settings_name_the_variable_and_never_the_password(env, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.key == key
    assert "hunter2" not in str(caught.value)


def test_redis_settings_and_a_password_that_does_not_belong_in_a_file(tmp_path):
    settings = load_settings(
        {"SWITCHYARD_REDIS_URL": "rediss://svc:hunter2@cache:6380/2", "SWITCHYARD_REPLICAS": "3"}
    )
    assert settings.redis.url.startswith("rediss://") and settings.redis.replicas == 3
    assert settings.redis.timeout == 0.05 and settings.redis.lease_ttl == 15.0
    assert "hunter2" not in repr(settings)
    text = '[redis]\nurl = "redis://svc:hunter2@cache/0"\n'
    with pytest.raises(ConfigError, match="set SWITCHYARD_REDIS_URL instead") as caught:
        load_settings(write(tmp_path, text))
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWITCHYARD_LEDGER_RETENTION_DAYS", "0"),
        ("SWITCHYARD_LEDGER_FLUSH_INTERVAL", "0"),
        ("SWITCHYARD_BUDGETS_UNTIL_SEEDED", "maybe"),
        ("SWITCHYARD_DATA_DIR", " "),
    ],
)
def test_bad_ledger_settings_are_refused(name, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert caught.value.key == name


def test_redact_hides_only_the_password():
    assert redact("postgresql://svc:pw@db:5432/x?sslmode=require") == (
        "postgresql://svc:***@db:5432/x?sslmode=require"
    )
    assert redact("http://relay.internal/v1") == "http://relay.internal/v1"


# Several workers (server/workers.py) must share their state: Redis, and one PostgreSQL ledger.
SHARED = {
    "SWITCHYARD_REDIS_URL": "redis://cache.internal/0",  # read, never connected to
    "SWITCHYARD_DATABASE_URL": "postgresql://svc@db/ledger",
}


def test_workers_default_to_one_and_may_be_several_with_shared_state():
    assert load_settings({}).server.workers == 1
    settings = load_settings({"SWITCHYARD_WORKERS": "4", **SHARED})
    assert (settings.server.workers, settings.server.worker_index) == (4, 0)
    # Port 0 too: the supervisor picks the free port and gives it to every worker.
    assert load_settings({"SWITCHYARD_WORKERS": "2", "SWITCHYARD_LISTEN": "127.0.0.1:0", **SHARED})


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_one_or_more(value):
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHYARD_WORKERS": value})
    assert caught.value.key == "SWITCHYARD_WORKERS"


def test_several_workers_without_redis_are_refused_saying_what_to_set():
    env = {"SWITCHYARD_WORKERS": "2", "SWITCHYARD_DATABASE_URL": SHARED["SWITCHYARD_DATABASE_URL"]}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.key == "SWITCHYARD_WORKERS"
    assert str(caught.value) == (
        "SWITCHYARD_WORKERS: 2 workers need shared state: set SWITCHYARD_REDIS_URL (redis:// or"
        " rediss://) so limits, budgets and the cache are shared, or run one worker"
    )


@pytest.mark.parametrize(
    ("database_url", "why"),
    [
        ("", "several processes must not write one SQLite file (sqlite:///.switchyard/ledger.db)"),
        ("sqlite:///ledger.db", "several processes must not write one SQLite file"),
        ("memory", "an in-memory ledger (with its tenants and keys) would be each worker's own"),
    ],
)
def test_several_workers_on_a_ledger_of_their_own_are_refused(database_url, why):
    env = {"SWITCHYARD_WORKERS": "2", "SWITCHYARD_REDIS_URL": SHARED["SWITCHYARD_REDIS_URL"]}
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "SWITCHYARD_DATABASE_URL": database_url})
    assert caught.value.key == "SWITCHYARD_WORKERS"
    message = str(caught.value)
    assert why in message
    assert "set SWITCHYARD_DATABASE_URL to a PostgreSQL URL" in message


def test_the_worker_index_is_the_supervisor_s_to_set():
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHYARD_WORKERS": "2", "SWITCHYARD_WORKER_INDEX": "1", **SHARED})
    assert caught.value.key == "SWITCHYARD_WORKER_INDEX"
    with pytest.raises(ConfigError, match="SWITCHYARD_WORKER_INDEX"):
        load_settings({"SWITCHYARD_WORKER_INDEX": "-1"})
    assert load_settings({"SWITCHYARD_WORKER_INDEX": "3"}).server.worker_index == 3


def test_each_worker_s_metrics_port_must_exist():
    env = {"SWITCHYARD_WORKERS": "3", **SHARED}
    assert load_settings({**env, "SWITCHYARD_PROMETHEUS_PORT": "65533"}).server.workers == 3
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "SWITCHYARD_PROMETHEUS_PORT": "65534"})
    assert caught.value.key == "SWITCHYARD_PROMETHEUS_PORT"


def test_per_call_bounds_default_and_come_from_the_environment_and_the_file(tmp_path):
    limits = load_settings({}).limits
    assert (limits.max_messages, limits.max_text_bytes, limits.max_parts) == (1000, 1 << 20, 2000)
    env = write(tmp_path, "[limits]\nmax_messages = 50\nmax_text_bytes = 4096\nmax_parts = 60\n")
    limits = load_settings(env).limits
    assert (limits.max_messages, limits.max_text_bytes, limits.max_parts) == (50, 4096, 60)
    limits = load_settings(
        {**env, "SWITCHYARD_MAX_MESSAGES": "7", "SWITCHYARD_MAX_TEXT_BYTES": "100"}
    ).limits  # the environment wins over the file
    assert (limits.max_messages, limits.max_text_bytes, limits.max_parts) == (7, 100, 60)
    assert load_settings({"SWITCHYARD_MAX_SCHEMA_BYTES": "1000"}).limits.max_schema_bytes == 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWITCHYARD_MAX_MESSAGES", "0"),
        ("SWITCHYARD_MAX_MESSAGES", "many"),
        ("SWITCHYARD_MAX_PARTS", "-1"),
        ("SWITCHYARD_MAX_SCHEMA_BYTES", "0"),
        ("SWITCHYARD_MAX_TEXT_BYTES", "0"),
        ("SWITCHYARD_MAX_TEXT_BYTES", str(2 * 1024**3)),  # past what gRPC's receive limit holds
    ],
)
def test_bad_per_call_bounds_name_the_variable(name, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert caught.value.key == name
