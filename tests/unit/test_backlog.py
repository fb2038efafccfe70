"""The gauges' pure definitions: consumer lag from offsets, the timers that hold deferred
deliveries and webhook retries, the oldest deferred age, open sessions."""

from __future__ import annotations

import json

from switchboard import records
from switchboard.backlog import (
    DEFERRED,
    WEBHOOK,
    OpenSessions,
    TimerTally,
    consumer_lag,
    timer_weight,
)
from switchboard.keys import expire_timer, job_timer, webhook_timer, window_timer
from switchboard.timers import b64, set_command

DISPATCH = frozenset({"comms.dispatch.sms", "comms.dispatch.priority"})


def _row(timer_id: str, topic: str, value: bytes, at: float | None) -> dict[str, object]:
    """A timer row as the scheduler stores it, from the command the app produces."""
    command = json.loads(set_command(timer_id, 100.0, topic, b"k", value, at=at))
    return {
        **{k: command[k] for k in ("due", "topic", "key", "value")},
        "partition": 0,
        "set_at": command["at"],
    }


def test_lag_is_end_minus_committed_and_never_negative() -> None:
    ends = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7, ("t", 3): 3}
    committed = {("t", 0): 4, ("t", 1): -1001, ("t", 2): 9}  # 1: nothing committed, 3: unknown
    assert consumer_lag(ends, committed) == {("t", 0): 6, ("t", 1): 5, ("t", 2): 0, ("t", 3): 3}


def test_window_timer_counts_its_release_indexes() -> None:
    release = records.encode(records.Release("s1", 0, "sms", 100.0, [1, 2, 5]))
    tid = window_timer("s1", 0, "sms", 100.0)
    assert timer_weight(tid, _row(tid, "comms.sessions", release, 1.0), DISPATCH) == (DEFERRED, 3)


def test_job_timer_is_deferred_only_when_it_targets_a_dispatch_topic() -> None:
    tid = job_timer("s1/0/sms", 2)
    assert timer_weight(tid, _row(tid, "comms.dispatch.sms", b"{}", 1.0), DISPATCH) == (DEFERRED, 1)
    # The same id aimed at the session commands topic is a retry's backoff, not a deferral.
    assert timer_weight(tid, _row(tid, "comms.sessions", b"{}", 1.0), DISPATCH) is None


def test_webhook_retries_and_other_timers() -> None:
    tid = webhook_timer("e1", 2)
    assert timer_weight(tid, _row(tid, "comms.webhooks", b"{}", 1.0), DISPATCH) == (WEBHOOK, 1)
    tid = expire_timer("s1")
    assert timer_weight(tid, _row(tid, "comms.reports", b"{}", 1.0), DISPATCH) is None


def test_unreadable_window_value_counts_no_delivery() -> None:
    tid = window_timer("s1", 0, "sms", 100.0)
    assert timer_weight(tid, {"value": "not base64 json"}, DISPATCH) == (DEFERRED, 0)
    assert timer_weight(tid, {"value": b64(b"[1, 2]")}, DISPATCH) == (DEFERRED, 0)


def test_tally_follows_sets_replacements_and_removals() -> None:
    tally = TimerTally(DISPATCH)
    w1, w2, j1 = (
        window_timer("s1", 0, "sms", 100.0),
        window_timer("s1", 1, "sms", 100.0),
        job_timer("s2/3/sms", 1),
    )
    release = records.encode(records.Release("s1", 0, "sms", 100.0, list(range(500))))
    tally.set(w1, _row(w1, "comms.sessions", release, 50.0))
    tally.set(w2, _row(w2, "comms.sessions", release, 60.0))
    tally.set(j1, _row(j1, "comms.dispatch.sms", b"{}", 40.0))
    assert tally.total(DEFERRED) == 1001
    assert tally.oldest(DEFERRED) == 40.0
    tally.set(w1, _row(w1, "comms.sessions", release, 50.0))  # set again: replaced, not added
    assert tally.total(DEFERRED) == 1001
    tally.remove(j1)  # fired
    assert (tally.total(DEFERRED), tally.oldest(DEFERRED)) == (1000, 50.0)
    tally.remove(j1)  # a stale fire: nothing
    tally.remove(w1)
    tally.remove(w2)
    assert (tally.total(DEFERRED), tally.oldest(DEFERRED)) == (0, None)


def test_tally_rebuild_replaces_everything_and_tolerates_rows_without_set_at() -> None:
    tally = TimerTally(DISPATCH)
    tally.set("webhook:e#1", {"topic": "comms.webhooks", "set_at": 1.0})
    j1 = job_timer("s/0/sms", 1)
    tally.rebuild([(j1, {"topic": "comms.dispatch.sms"})])  # a row from before set_at existed
    assert (tally.total(DEFERRED), tally.total(WEBHOOK)) == (1, 0)
    assert tally.oldest(DEFERRED) is None


def test_open_sessions() -> None:
    sessions = OpenSessions()
    sessions.opened("a")
    sessions.opened("b")
    sessions.opened("a")  # a duplicate opening
    sessions.progressed("a", completed=False)
    assert len(sessions) == 2
    sessions.progressed("a", completed=True)
    assert len(sessions) == 1
    sessions.progressed("a", completed=False)  # a re-send opens it again
    assert len(sessions) == 2
    sessions.start_recount()
    sessions.finish_recount(["c"])
    assert len(sessions) == 1


def test_what_the_agents_report_during_a_recount_is_kept() -> None:
    sessions = OpenSessions()
    sessions.opened("old")  # of a partition that moved away: the recount forgets it
    sessions.start_recount()
    sessions.opened("new")  # opened while the scan ran (its row may be past the scan's cursor)
    sessions.progressed("done", completed=True)  # completed after the scan read it as open
    sessions.finish_recount(["a", "done"])
    assert len(sessions) == 2  # a, new
    sessions.progressed("a", completed=True)  # after the recount: as usual
    assert len(sessions) == 1
