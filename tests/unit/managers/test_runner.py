"""The mechanism: which managers a client gets, in which order, how answers merge, and how a
failing manager is contained (switchboard.managers.runner)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.errors import ConfigError
from switchboard.managers import (
    BUILTINS,
    DETAIL_KEY,
    ENTRY_POINT_GROUP,
    HookOutcome,
    MemoryState,
    OptOutContext,
    Registry,
    Scrub,
    SendContext,
    ServiceManagerBase,
    ServiceManagers,
    SessionCompleteContext,
    SessionStartContext,
    SessionStartResult,
    UnknownServiceManager,
    hooks_of,
    parse_manager_list,
)
from switchboard.managers.builtin import MmsWhenCheaper
from tests.unit.managers import FakeLookup, make_client, report_ctx, send_ctx, start_ctx

KNOWN = tuple(sorted(BUILTINS))


class Returns(ServiceManagerBase):
    """Returns fixed values from on_message_send, and records what it saw."""

    def __init__(self, name: str, values: Mapping[str, Any] | None, log: list[Any]) -> None:
        super().__init__()
        self.name = name
        self.values = values
        self.log = log

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        self.log.append((self.name, dict(ctx.values), ctx.message.sender))
        return self.values


class Raises(ServiceManagerBase):
    """Changes the message, then fails, in every hook."""

    name = "raises"

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        ctx.message.body = "half-done"
        ctx.message.extras["touched"] = True
        ctx.message.sender = "+19999999999"
        raise RuntimeError("boom")

    async def on_delivery_report(self, ctx: object) -> None:
        raise RuntimeError("report boom")

    async def on_opt_out(self, ctx: object) -> None:
        raise RuntimeError("opt-out boom")

    async def on_session_start(self, ctx: SessionStartContext) -> SessionStartResult | None:
        raise RuntimeError("start boom")

    async def on_session_complete(self, ctx: object) -> None:
        raise RuntimeError("complete boom")


class Records(ServiceManagerBase):
    """Records every call of the plain hooks."""

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__()
        self.name = name
        self.calls = calls

    async def on_delivery_report(self, ctx: object) -> None:
        self.calls.append(f"{self.name}:report")

    async def on_opt_out(self, ctx: object) -> None:
        self.calls.append(f"{self.name}:opt-out")

    async def on_session_complete(self, ctx: object) -> None:
        self.calls.append(f"{self.name}:complete")


class Starts(ServiceManagerBase):
    """Answers a fixed SessionStartResult, and records the addresses it was shown."""

    def __init__(self, name: str, result: SessionStartResult | None) -> None:
        super().__init__()
        self.name = name
        self.result = result
        self.seen: list[str] | None = None

    async def on_session_start(self, ctx: SessionStartContext) -> SessionStartResult | None:
        self.seen = list(ctx.addresses)
        return self.result


def runner(**kwargs: Any) -> ServiceManagers:
    return ServiceManagers((), registry=Registry(entry_points=[]), **kwargs)


# -- order and merge -------------------------------------------------------------------------


async def test_each_manager_sees_what_earlier_ones_returned_and_later_wins() -> None:
    log: list[Any] = []
    managers = [
        Returns("a", {"sender": "+14155550100", "x": 1}, log),
        Returns("b", None, log),
        Returns("c", {"x": 2, "y": "c"}, log),
        Returns("d", {}, log),
    ]
    ctx = send_ctx(make_client(), MemoryState())
    outcome = await runner().run_send(managers, ctx)
    assert log == [
        ("a", {}, None),
        ("b", {"sender": "+14155550100", "x": 1}, "+14155550100"),
        ("c", {"sender": "+14155550100", "x": 1}, "+14155550100"),
        ("d", {"sender": "+14155550100", "x": 2, "y": "c"}, "+14155550100"),
    ]
    assert dict(outcome.values) == {"sender": "+14155550100", "x": 2, "y": "c"}
    assert outcome.ran == ("a", "b", "c", "d")
    assert outcome.errors == () and outcome.detail == {}
    assert outcome.message is ctx.message and ctx.message.sender == "+14155550100"


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["k", "m", "n", "sender"]), st.integers(0, 9)).map(
                lambda d: {k: (f"+1415555{v:04d}" if k == "sender" else v) for k, v in d.items()}
            ),
        ),
        max_size=6,
    )
)
def test_merge_rule_property(answers: list[dict[str, Any] | None]) -> None:
    log: list[Any] = []
    managers = [Returns(f"m{i}", answer, log) for i, answer in enumerate(answers)]
    ctx = send_ctx(make_client(), MemoryState())
    outcome = asyncio.run(runner().run_send(managers, ctx))
    merged: dict[str, Any] = {}
    for (name, seen, sender), answer in zip(log, answers, strict=True):
        assert seen == merged, name  # exactly what the earlier ones returned, later winning
        assert sender == merged.get("sender")  # and the message agrees with the values
        merged |= answer or {}
    assert dict(outcome.values) == merged
    assert ctx.message.sender == merged.get("sender")


async def test_initial_values_are_the_starting_point() -> None:
    log: list[Any] = []
    ctx = dataclasses.replace(send_ctx(make_client(), MemoryState()), values={"z": 0})
    outcome = await runner().run_send([Returns("a", {"z": 1}, log)], ctx)
    assert log[0][1] == {"z": 0} and outcome.values["z"] == 1


async def test_recognised_keys_are_applied_to_the_message() -> None:
    log: list[Any] = []
    ctx = send_ctx(make_client(), MemoryState(), sender="+14155550100")
    await runner().run_send(
        [Returns("a", {"sender": None, "messaging_service_sid": "MG1", "send_as_mms": True}, log)],
        ctx,
    )
    assert ctx.message.sender is None
    assert ctx.message.messaging_service_sid == "MG1"
    assert ctx.message.send_as_mms is True


# -- failures --------------------------------------------------------------------------------


async def test_a_raising_manager_is_reported_undone_and_the_send_goes_on() -> None:
    log: list[Any] = []
    ctx = send_ctx(make_client(), MemoryState(), body="Hello", extras={"keep": 1})
    outcome = await runner().run_send(
        [
            Returns("first", {"sender": "+14155550100"}, log),
            Raises(),
            Returns("last", {"x": 1}, log),
        ],
        ctx,
    )
    # The failed hook's half-done changes are gone; what the others did stays.
    assert ctx.message.body == "Hello"
    assert ctx.message.extras == {"keep": 1}
    assert ctx.message.sender == "+14155550100"
    assert log[1] == ("last", {"sender": "+14155550100"}, "+14155550100")
    assert outcome.ran == ("first", "last")
    assert [e.as_dict() for e in outcome.errors] == [
        {"manager": "raises", "hook": "on_message_send", "error": "RuntimeError: boom"}
    ]
    assert outcome.detail == {DETAIL_KEY: ["raises.on_message_send: RuntimeError: boom"]}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (["sender", "+1"], "on_message_send returned list"),
        ({"sender": 14155550100}, "sender must be str or None"),
        ({"send_as_mms": "yes"}, "send_as_mms must be bool"),
        ({1: "x"}, "string keys"),
    ],
)
async def test_a_wrong_answer_is_an_error_and_is_not_applied(answer: Any, message: str) -> None:
    ctx = send_ctx(make_client(), MemoryState())
    outcome = await runner().run_send([Returns("bad", answer, [])], ctx)
    assert outcome.values == {} and ctx.message.sender is None and not ctx.message.send_as_mms
    assert len(outcome.errors) == 1 and message in outcome.errors[0].error


async def test_a_slow_hook_times_out_and_is_undone() -> None:
    class Slow(ServiceManagerBase):
        name = "slow"

        async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
            ctx.message.body = "changed"
            await asyncio.sleep(10)
            return None

    ctx = send_ctx(make_client(), MemoryState())
    outcome = await runner(timeout=0.02).run_send([Slow()], ctx)
    assert ctx.message.body == "Hello"
    assert outcome.errors[0].error == "TimeoutError: did not finish within 0.02s"


async def test_a_hook_raising_timeout_itself_is_not_called_a_timeout_of_the_runner() -> None:
    class Own(ServiceManagerBase):
        name = "own"

        async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
            raise TimeoutError("the lookup timed out")

    outcome = await runner().run_send([Own()], send_ctx(make_client(), MemoryState()))
    assert outcome.errors[0].error == "TimeoutError: the lookup timed out"


async def test_cancellation_is_never_swallowed() -> None:
    started = asyncio.Event()

    class Waits(ServiceManagerBase):
        name = "waits"

        async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
            started.set()
            await asyncio.sleep(10)
            return None

    task = asyncio.create_task(runner().run_send([Waits()], send_ctx(make_client(), MemoryState())))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_sync_hook_is_reported() -> None:
    class Sync(ServiceManagerBase):
        name = "sync"

        def on_message_send(self, ctx: SendContext) -> None:
            return None

    outcome = await runner().run_send([Sync()], send_ctx(make_client(), MemoryState()))
    assert "not async" in outcome.errors[0].error


async def test_long_error_messages_are_cut() -> None:
    class Long(ServiceManagerBase):
        name = "long"

        async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
            raise ValueError("x" * 5000)

    outcome = await runner().run_send([Long()], send_ctx(make_client(), MemoryState()))
    assert len(outcome.errors[0].error) == 300


async def test_plain_hooks_run_in_order_and_errors_are_captured() -> None:
    calls: list[str] = []
    client, state = make_client(), MemoryState()
    managers = [Records("a", calls), Raises(), Records("b", calls)]
    sb = runner()
    report = await sb.run_delivery_report(managers, report_ctx(client, state))
    opt_out = await sb.run_opt_out(
        managers, OptOutContext(client=client, channel="sms", state=state, address="+14155550199")
    )
    complete = await sb.run_session_complete(
        managers,
        SessionCompleteContext(
            client=client,
            state=state,
            session_id="s1",
            channels=("sms",),
            counts={"delivered": 1},
            deliveries=1,
        ),
    )
    assert calls == ["a:report", "b:report", "a:opt-out", "b:opt-out", "a:complete", "b:complete"]
    for outcome, hook in (
        (report, "on_delivery_report"),
        (opt_out, "on_opt_out"),
        (complete, "on_session_complete"),
    ):
        assert isinstance(outcome, HookOutcome)
        assert outcome.ran == ("a", "b")
        assert [(e.manager, e.hook) for e in outcome.errors] == [("raises", hook)]
        assert outcome.detail[DETAIL_KEY][0].startswith(f"raises.{hook}: ")


async def test_managers_without_a_hook_are_skipped() -> None:
    outcome = await runner().run_send([Records("a", [])], send_ctx(make_client(), MemoryState()))
    assert outcome.ran == () and outcome.errors == ()


# -- session start ---------------------------------------------------------------------------


A, B, C, D = "+14155550001", "+14155550002", "+14155550003", "+14155550004"


async def test_session_start_merges_scrubs_and_later_managers_see_what_is_left() -> None:
    first = Starts(
        "first", SessionStartResult(scrub=(Scrub(C, "first's reason"),), detail={"n": 1})
    )
    second = Starts(
        "second",
        SessionStartResult(
            scrub=(Scrub(A, "second's reason"), Scrub("+19999999999", "not in the session")),
        ),
    )
    third = Starts("third", None)
    outcome = await runner().run_session_start(
        [first, Raises(), second, third], start_ctx(make_client(), MemoryState(), [A, B, C, B, D])
    )
    assert first.seen == [A, B, C, D]  # repeats removed
    assert second.seen == [A, B, D]  # C is out already
    assert third.seen == [B, D]
    # In audience order, one per address, with the manager that scrubbed it.
    assert [(s.address, s.reason, s.manager) for s in outcome.scrubbed] == [
        (A, "second's reason", "second"),
        (C, "first's reason", "first"),
    ]
    assert outcome.scrub_reasons()[C].manager == "first"
    assert not outcome.blocked and outcome.block_reason is None
    assert outcome.ran == ("first", "second", "third")
    assert [e.manager for e in outcome.errors] == ["raises"]  # fail-open: scrubbed nothing
    assert outcome.detail["first"] == {"n": 1}
    assert outcome.detail[DETAIL_KEY][0].startswith("raises.on_session_start: ")


async def test_a_block_wins_and_stops_the_later_managers() -> None:
    scrubber = Starts("scrubber", SessionStartResult(scrub=(Scrub(A, "r"),)))
    blocker = Starts("blocker", SessionStartResult(block="not configured yet"))
    later = Starts("later", SessionStartResult(scrub=(Scrub(B, "r"),)))
    outcome = await runner().run_session_start(
        [scrubber, blocker, later], start_ctx(make_client(), MemoryState(), [A, B])
    )
    assert outcome.blocked and outcome.block_reason == "blocker: not configured yet"
    assert later.seen is None
    assert [s.address for s in outcome.scrubbed] == [A]


async def test_session_start_rejects_a_wrong_answer() -> None:
    class Wrong(ServiceManagerBase):
        name = "wrong"

        async def on_session_start(self, ctx: SessionStartContext) -> Any:
            return [A]

    outcome = await runner().run_session_start(
        [Wrong()], start_ctx(make_client(), MemoryState(), [A])
    )
    assert outcome.scrubbed == () and "SessionStartResult" in outcome.errors[0].error


# -- which managers --------------------------------------------------------------------------


def test_the_client_list_replaces_the_global_list() -> None:
    sb = ServiceManagers(["sticky-sender", "numpicker-basic"], registry=Registry(entry_points=[]))
    assert [m.name for m in sb.for_client(make_client())] == ["sticky-sender", "numpicker-basic"]
    own = make_client(service_managers=("mms-when-cheaper", "sticky-sender"))
    assert [m.name for m in sb.for_client(own)] == ["mms-when-cheaper", "sticky-sender"]
    assert sb.for_client(make_client(service_managers=())) == []
    # One instance per name, shared by every client.
    assert sb.for_client(own)[1] is sb.for_client(make_client())[0]


def test_a_client_naming_an_unknown_manager_is_a_config_error() -> None:
    sb = ServiceManagers([], registry=Registry(entry_points=[]))
    client = make_client(service_managers=("sticky-sender", "nope"))
    with pytest.raises(UnknownServiceManager) as info:
        sb.for_client(client)
    assert "clients.acme.service_managers" in str(info.value)
    assert "'nope'" in str(info.value) and "numpicker-basic" in str(info.value)
    with pytest.raises(ConfigError):
        sb.check_client(client)
    sb.check_client(make_client(service_managers=("carrier-lookup",)))


def test_whether_a_client_s_managers_want_a_hook_is_theirs_and_an_unknown_name_still_refused() -> (
    None
):
    sb = ServiceManagers(["sticky-sender"], registry=Registry(entry_points=[]))
    for client in (make_client(), make_client(service_managers=()), make_client()):
        for hook in ("on_message_send", "on_delivery_report", "on_session_start"):
            expected = ServiceManagers.has_hook(sb.for_client(client), hook)
            assert sb.wants(client, hook) is expected
    assert sb.wants(make_client(), "on_message_send"), "sticky-sender picks the sender"
    assert not sb.wants(make_client(service_managers=()), "on_message_send")
    with pytest.raises(UnknownServiceManager):
        sb.wants(make_client(service_managers=("nope",)), "on_message_send")


def test_parse_the_global_list() -> None:
    assert parse_manager_list("sticky-sender,numpicker-basic", KNOWN) == (
        "sticky-sender",
        "numpicker-basic",
    )
    assert parse_manager_list(None, KNOWN) == () == parse_manager_list("", KNOWN)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sticky-sender, numpicker-basic", "without spaces"),
        (
            "sticky-sender,nope",
            "unknown service manager 'nope'; known service managers: "
            "carrier-lookup, mms-when-cheaper, numpicker-basic, per-client-messageservices, "
            "scrub-bad-mobilenums, sticky-sender",
        ),
        ("sticky-sender,,numpicker-basic", "an empty name"),
        ("sticky-sender,", "an empty name"),
        ("sticky-sender,sticky-sender", "'sticky-sender' is listed twice"),
    ],
)
def test_bad_global_lists_are_rejected_clearly(value: str, expected: str) -> None:
    with pytest.raises(UnknownServiceManager) as info:
        parse_manager_list(value, KNOWN)
    assert str(info.value).startswith("SERVICE_MANAGERS: ")
    assert expected in str(info.value)


def test_from_setting_builds_the_global_list_at_once() -> None:
    sb = ServiceManagers.from_setting(
        "mms-when-cheaper,carrier-lookup",
        options={"mms-when-cheaper": {"ratio": 3}},
        registry=Registry(entry_points=[]),
    )
    assert sb.names == ("mms-when-cheaper", "carrier-lookup")
    mms = sb.for_client(make_client())[0]
    assert isinstance(mms, MmsWhenCheaper) and mms.ratio == 3.0
    with pytest.raises(UnknownServiceManager, match="SERVICE_MANAGERS"):
        ServiceManagers.from_setting("nope", registry=Registry(entry_points=[]))


def test_bad_options_stop_the_start() -> None:
    registry = Registry(entry_points=[])
    with pytest.raises(UnknownServiceManager, match="options given for unknown"):
        ServiceManagers([], options={"nope": {}}, registry=registry)
    with pytest.raises(ConfigError, match="unknown option"):
        ServiceManagers(
            ["numpicker-basic"], options={"numpicker-basic": {"chanels": []}}, registry=registry
        )
    with pytest.raises(ConfigError, match="ratio must be"):
        ServiceManagers(
            ["mms-when-cheaper"], options={"mms-when-cheaper": {"ratio": 0}}, registry=registry
        )
    with pytest.raises(ConfigError, match="option lookup is required"):
        ServiceManagers(["scrub-bad-mobilenums"], registry=registry)
    # Options for a manager only clients enable are checked when a client first uses it.
    sb = ServiceManagers([], options={"sticky-sender": {"channels": ["fax"]}}, registry=registry)
    with pytest.raises(ConfigError, match="channels must be"):
        sb.for_client(make_client(service_managers=("sticky-sender",)))


def test_every_builtin_describes_itself() -> None:
    sb = ServiceManagers(
        list(BUILTINS),
        options={"scrub-bad-mobilenums": {"lookup": lambda client: FakeLookup()}},
        registry=Registry(entry_points=[]),
    )
    for manager in sb.for_client(make_client()):
        meta = manager.metadata()
        assert meta["name"] == manager.name and meta["description"]
        assert meta["hooks"] == list(hooks_of(manager)) and meta["hooks"]
    assert {m.name: m.metadata()["can_spend_money"] for m in sb.for_client(make_client())} == {
        "numpicker-basic": False,
        "sticky-sender": False,
        "mms-when-cheaper": True,
        "scrub-bad-mobilenums": True,
        "carrier-lookup": False,
        "per-client-messageservices": False,
    }
    managers = sb.for_client(make_client())
    assert ServiceManagers.has_hook(managers, "on_opt_out")
    assert not ServiceManagers.has_hook(managers, "on_session_complete")


# -- plug-ins --------------------------------------------------------------------------------


class Plugin(ServiceManagerBase):
    name = "plugin"

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        return {"from_plugin": self.options.get("greeting", "hi")}


class FakeEntryPoint:
    def __init__(self, name: str, target: Any, value: str = "plugin_module:Plugin") -> None:
        self.name = name
        self.value = value
        self.target = target
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


async def test_entry_points_add_managers_and_load_only_when_used() -> None:
    ep = FakeEntryPoint("plugin", Plugin)
    registry = Registry(entry_points=[ep])
    assert registry.names() == (*KNOWN, "plugin")
    sb = ServiceManagers(
        ["sticky-sender"], options={"plugin": {"greeting": "hey"}}, registry=registry
    )
    assert ep.loads == 0
    managers = sb.for_client(make_client(service_managers=("plugin",)))
    outcome = await sb.run_send(managers, send_ctx(make_client(), MemoryState()))
    assert outcome.values == {"from_plugin": "hey"} and ep.loads == 1


def test_an_entry_point_cannot_replace_a_builtin(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(entry_points=[FakeEntryPoint("sticky-sender", Plugin)])
    assert registry.names() == KNOWN
    assert type(registry.create("sticky-sender")).__module__ == "switchboard.managers.builtin"
    assert "built-in service manager's name" in caplog.text


@pytest.mark.parametrize(
    ("entry_points", "message"),
    [
        (
            [FakeEntryPoint("plugin", ImportError("no module named plugin_module"))],
            "failed to load: ImportError: no module named plugin_module",
        ),
        (
            [
                FakeEntryPoint("plugin", Plugin, "a:Plugin"),
                FakeEntryPoint("plugin", Plugin, "b:Plugin"),
            ],
            "offered by several entry points (a:Plugin, b:Plugin)",
        ),
        ([FakeEntryPoint("other", Plugin)], "the object it builds is named 'plugin'"),
        ([FakeEntryPoint("plugin", 42)], "is not callable"),
        ([FakeEntryPoint("plugin", lambda: Plugin())], "could not be created: TypeError"),
        ([FakeEntryPoint("plugin", lambda options: object())], "has no name and metadata()"),
    ],
)
def test_broken_plugins_are_config_errors(entry_points: list[FakeEntryPoint], message: str) -> None:
    registry = Registry(entry_points=entry_points)
    name = entry_points[0].name
    with pytest.raises(ConfigError) as info:
        ServiceManagers([name], registry=registry)
    assert message in str(info.value)


def test_a_plugin_with_a_sync_hook_is_refused() -> None:
    class Sync(ServiceManagerBase):
        name = "sync"

        def on_opt_out(self, ctx: object) -> None: ...

    with pytest.raises(ConfigError, match="on_opt_out must be an async method"):
        Registry(entry_points=[FakeEntryPoint("sync", Sync)]).create("sync")


def test_unknown_names_are_refused_by_the_registry() -> None:
    with pytest.raises(UnknownServiceManager, match="known: carrier-lookup"):
        Registry(entry_points=[]).create("nope")


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A distribution on sys.path declaring a manager in the entry point group."""
    module = "switchboard_test_plugin_xyz"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent("""
        from switchboard.managers import ServiceManagerBase

        class Greeter(ServiceManagerBase):
            name = "greeter"
            description = "says hello"

            async def on_message_send(self, ctx):
                return {"greeting": "hello"}
    """)
    )
    dist = tmp_path / "switchboard_test_plugin_xyz-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: switchboard-test-plugin-xyz\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ngreeter = {module}:Greeter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


async def test_entry_points_are_discovered_from_installed_distributions(
    installed_plugin: str,
) -> None:
    sb = ServiceManagers.from_setting("greeter,sticky-sender")
    assert "greeter" in sb.registry.names()
    managers = sb.for_client(make_client())
    assert [m.name for m in managers] == ["greeter", "sticky-sender"]
    assert managers[0].metadata()["description"] == "says hello"
    outcome = await sb.run_send(managers, send_ctx(make_client(), MemoryState()))
    assert outcome.values["greeting"] == "hello"


def test_the_default_registry_reads_the_installed_entry_points() -> None:
    assert Registry().names()[: len(KNOWN)] == KNOWN  # built-ins first, plug-ins (if any) after


async def test_a_scrubbing_manager_through_the_runner_names_itself() -> None:
    sb = ServiceManagers(
        ["scrub-bad-mobilenums"],
        options={"scrub-bad-mobilenums": {"lookup": lambda c: FakeLookup({A: "landline"})}},
        registry=Registry(entry_points=[]),
    )
    client = make_client()
    outcome = await sb.run_session_start(
        sb.for_client(client), start_ctx(client, MemoryState(), [A, B])
    )
    assert [(s.address, s.manager) for s in outcome.scrubbed] == [(A, "scrub-bad-mobilenums")]
    assert outcome.detail["scrub-bad-mobilenums"]["looked_up"] == 2
    assert isinstance(start_ctx(client, MemoryState(), []), SessionStartContext)


async def test_a_slow_session_start_is_cut_off_and_scrubs_nothing() -> None:
    """Lookups that hang must not hold the session agent (and its partition's other sessions):
    past ``SWITCHBOARD_SESSION_START_TIMEOUT`` the chunk goes out unscrubbed, and it is said."""

    class Hangs(Starts):
        async def on_session_start(self, ctx: SessionStartContext) -> SessionStartResult | None:
            await asyncio.sleep(3600)
            return None

    hangs = Hangs("hangs", SessionStartResult(scrub=(Scrub(A, "never"),)))
    outcome = await runner(session_start_timeout=0.05).run_session_start(
        [hangs], start_ctx(make_client(), MemoryState(), [A, B])
    )
    assert not outcome.scrubbed and not outcome.blocked
    assert [e.manager for e in outcome.errors] == ["hangs"]
    assert "did not finish within 0.05s" in outcome.detail[DETAIL_KEY][0]


def test_the_worker_bounds_session_start_with_its_setting() -> None:
    from streams.managers import build_managers
    from switchboard.settings import Settings
    from transports.twilio_lookup import TwilioLookups

    managers = build_managers(Settings(session_start_timeout=2.5), TwilioLookups())
    assert managers.session_start_timeout == 2.5
    assert Settings().session_start_timeout == 10.0
