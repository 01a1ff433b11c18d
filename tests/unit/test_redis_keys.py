"""One home for the Redis key schema (dispatcher/state/redis_keys.py): no other module of the product, the benchmarks
or the scripts spells a key name; the Lua scripts take every key as KEYS; docs/architecture.md's "## Keys" table
names exactly the keys the module builds; and the names are byte for byte the ones a running deployment has
written (tests/integration/test_store.py reads keys written under those names through the real store)."""

from __future__ import annotations

import ast
import inspect
import io
import itertools
import re
import tokenize
from pathlib import Path

from dispatcher.state import redis_keys
from workers.limiter import Limit

ROOT = Path(__file__).resolve().parents[2]
KEY_MODULE = ROOT / "dispatcher" / "state" / "redis_keys.py"
SOURCES = ("config", "channels", "dispatcher", "workers", "benchmarks", "scripts")
# A hash tag of the schema (`{a:`, `{s:`, `{p:`, `{rl:`, `{cb:`, `{i:`, `{archive}`), the closing `}:` an
# f-string writes as `}}:`, the record's suffix, the dead-letter stream. Read in string constants (the
# literal parts of f-strings too, where `{{a:` is `{a:`; format specs like `{i:07d}` are not literals) and in
# comments.
SPELLED = re.compile(r"\{(?:a|s|p|rl|cb|i|tok|pm|pw):|\{archive\}|\}:|:acct\b|dispatcher:dead-letters")
KOMBU_KEYS = {"unacked"}
# What the table writes for each parameter of a key builder.
PLACEHOLDERS: dict[str, tuple[object, ...]] = {
    "account_id": ("ID",),
    "shard": ("N",),
    "phone": ("PHONE",),
    "caller": ("CALLER",),
    "digest": ("DIGEST",),
    "limit": ("CHANNEL",),
    "identifiers": (("SENDER",),),
    "seconds": tuple(seconds for _, seconds in Limit(rate=1, burst=1).windows()),  # every window the limiter has
    "provider": ("PROVIDER",),
    "channel": ("CHANNEL",),
    "message_id": ("MSGID",),
    "queue": ("QUEUE",),
    "endpoint_id": ("EP",),
}
NOT_BUILDERS = {
    "shard_of", "account_id_of", "use_shard_layout", "shard_layout", "account_records_pattern", "layout_move_keys",
    "per_account_layout_pattern",
}  # fmt: skip


def _source_files() -> list[Path]:
    return [path for folder in SOURCES for path in sorted((ROOT / folder).rglob("*.py")) if path != KEY_MODULE]


def _spelled_keys(path: Path) -> list[str]:
    """`line: text` for each line of the file that spells a key, in order."""
    text = path.read_text(encoding="utf-8")
    found: dict[int, str] = {}
    for node in ast.walk(ast.parse(text)):
        text_node = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if text_node and (SPELLED.search(node.value) or node.value in KOMBU_KEYS):
            found.setdefault(node.lineno, repr(node.value[:60]))
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and SPELLED.search(token.string):
            found.setdefault(token.start[0], token.string[:60])
    return [f"{line}: {what}" for line, what in sorted(found.items())]


def test_only_the_key_module_spells_a_key_name() -> None:
    spelled = {str(path.relative_to(ROOT)): _spelled_keys(path) for path in _source_files()}
    assert {name: where for name, where in spelled.items() if where} == {}


def test_the_check_finds_a_key_spelled_by_hand(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'KEY = f"{{a:{account_id}}}:claims"\nLIMIT = f"{{rl:{name}}}:1s"\nSTREAM = "dispatcher:dead-letters"\n'
        'ids = [f"ACC{i:07d}" for i in range(3)]  # the key {s:N}:wake\nfound = {i: 1 for i in ids}\n'
        'HASH = "unacked"\n'
    )
    assert [line.split(":")[0] for line in _spelled_keys(sample)] == ["1", "2", "3", "4", "6"]


def _lua_scripts() -> list[tuple[str, str]]:
    scripts = []
    for path in _source_files() + [KEY_MODULE]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
                scripts.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.value))
    return scripts


def test_every_lua_script_takes_its_keys_as_KEYS() -> None:
    calls = [
        (where, match.group(1), (match.group(2) or "").strip())
        for where, script in _lua_scripts()
        for match in re.finditer(r"redis\.call\('(\w+)'(?:\s*,\s*([^,)]+))?", script)
    ]
    assert len({where for where, _, _ in calls}) >= 11  # the store's, ledger's, ranks', archiver's and limiter's
    # The key of each call: an element of KEYS, all of them, or the loop variable over KEYS (the limiter's windows).
    named = [
        (where, command, key)
        for where, command, key in calls
        if command != "TIME" and not re.fullmatch(r"KEYS\[[^\]]+\]|unpack\(KEYS.*|key", key)
    ]
    assert named == []
    # A bare `key` is the loop variable over KEYS, and no script joins a key with `..`.
    assert all("in ipairs(KEYS)" in script for _, script in _lua_scripts() if re.search(r"\bkey\b", script))
    assert not [where for where, script in _lua_scripts() if re.search(r"KEYS\[[^\]]+\]\s*\.\.|\.\.\s*KEYS", script)]


def _builders() -> dict[str, object]:
    return {
        name: function
        for name, function in inspect.getmembers(redis_keys, inspect.isfunction)
        if function.__module__ == redis_keys.__name__ and not name.startswith("_")
    }


def _module_keys() -> set[str]:
    """Every key the module can build, written as the table writes it."""
    constants = {name: value for name, value in vars(redis_keys).items() if name.isupper() and name[0] != "_"}
    keys = {value for value in constants.values() if isinstance(value, str)}
    keys.discard(redis_keys.ACCOUNT_RECORDS)  # a SCAN pattern over the records, not a key
    for name, function in _builders().items():
        if name in NOT_BUILDERS:
            continue
        parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
        for values in itertools.product(*(PLACEHOLDERS[parameter] for parameter in parameters)):
            built = function(*values)  # type: ignore[operator]
            keys |= {built} if isinstance(built, str) else set(built)
    return {key.encode("unicode_escape").decode("ascii") for key in keys}


def _table_keys() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {key for row in rows for key in re.findall(r"`([^`]+)`", row)}


def test_every_public_function_of_the_key_module_builds_keys_or_is_named_here() -> None:
    unknown = [name for name in _builders() if name not in NOT_BUILDERS and not name.endswith(("_key", "_keys"))]
    assert unknown == []


def test_the_keys_table_in_the_docs_is_the_key_modules() -> None:
    module, table = _module_keys(), _table_keys()
    assert sorted(module - table) == [], "built by dispatcher/state/redis_keys.py, missing from docs/architecture.md"
    assert sorted(table - module) == [], "in docs/architecture.md, built by nothing"


def test_the_names_are_byte_for_byte_those_a_deployment_has_written() -> None:
    """Spelled out as the code spelled them before they had one home: a change here strands stored data."""
    assert [
        redis_keys.account_record_key("ACC1"), redis_keys.history_key("ACC1"), redis_keys.claims_key("ACC1"),
        redis_keys.let_go_key("ACC1"), redis_keys.events_key("ACC1"), redis_keys.ranks_key("ACC1"),
        redis_keys.voice_key("ACC1"), redis_keys.phone_key("+8613800138000"),
        redis_keys.wake_key(3), redis_keys.queued_key(3), redis_keys.inflight_key(3), redis_keys.unverified_key(3),
        redis_keys.audit_key(3), redis_keys.shard_counts_key(3), redis_keys.moved_key(3),
        redis_keys.CLOSED_CURSOR, redis_keys.HISTORY_CURSOR, redis_keys.DEAD_LETTERS,
        redis_keys.idempotency_meta_key("k1", "d1"), redis_keys.idempotency_body_key("k1", "d1"),
        *(redis_keys.rate_window_key("sms", ("+15005550006",), seconds) for seconds in (1.1, 10.0)),
        redis_keys.breaker_key("email"), redis_keys.probe_key("email"),
        *redis_keys.queue_keys("sms"), redis_keys.UNACKED,
    ] == [
        "{a:ACC1}:acct", "{a:ACC1}:hist", "{a:ACC1}:claims", "{a:ACC1}:let-go", "{a:ACC1}:events",
        "{a:ACC1}:ranks", "{a:ACC1}:voice", "{p:+8613800138000}:accounts",
        "{s:3}:wake", "{s:3}:queued", "{s:3}:inflight", "{s:3}:unverified", "{s:3}:audit", "{s:3}:accounts",
        "{s:3}:moved", "{archive}:closed-cursor", "{archive}:history-cursor", "dispatcher:dead-letters",
        "{i:k1:d1}:meta", "{i:k1:d1}:body", "{rl:sms:+15005550006}:1s", "{rl:sms:+15005550006}:10s",
        "{cb:email}:state", "{cb:email}:probe", "sms", "sms\x06\x163", "sms\x06\x166", "sms\x06\x169", "unacked",
    ]  # fmt: skip
    assert redis_keys.account_record_key("*") == redis_keys.ACCOUNT_RECORDS == "{a:*}:acct"
    assert redis_keys.account_id_of("{a:ACC:1}:acct") == "ACC:1"
    # crc32 of the id mod the shard count, as every stored wake-up, index and audit stream was filed.
    assert [redis_keys.shard_of(account_id, 16) for account_id in ("A1", "ACC0000001", "王小明")] == [1, 5, 3]
