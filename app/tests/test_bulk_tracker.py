"""Bookkeeping of pipelined publisher confirms (no broker): delivery tags, acks, nacks, returns."""

from __future__ import annotations

import pytest

from celery_stack_app.bulk import BulkPublishError, BulkResult, ConfirmTracker, Outgoing


def item(n: int) -> Outgoing:
    return Outgoing(task_id=f"t{n}", name="x", exchange="e", routing_key="r", body=b"", properties={})


def ids(items) -> list[str]:
    return [i.task_id for i in items]


@pytest.fixture()
def tracker():
    t = ConfirmTracker()
    for n in range(1, 11):
        assert t.sent(item(n)) == n          # tags count from 1 on a confirm channel
    return t


def test_single_acks_in_order(tracker):
    confirmed, unroutable = tracker.ack(1, False)
    assert ids(confirmed) == ["t1"] and unroutable == []
    assert tracker.outstanding == 9


def test_multiple_ack_confirms_every_tag_up_to_it(tracker):
    confirmed, _ = tracker.ack(4, True)
    assert ids(confirmed) == ["t1", "t2", "t3", "t4"]
    assert tracker.outstanding == 6
    confirmed, _ = tracker.ack(10, True)
    assert ids(confirmed) == ["t5", "t6", "t7", "t8", "t9", "t10"]
    assert tracker.outstanding == 0


def test_out_of_order_single_acks_then_multiple(tracker):
    assert ids(tracker.ack(7, False)[0]) == ["t7"]
    assert ids(tracker.ack(3, False)[0]) == ["t3"]
    # a multiple ack covers only what is still outstanding, oldest first
    assert ids(tracker.ack(8, True)[0]) == ["t1", "t2", "t4", "t5", "t6", "t8"]
    assert tracker.outstanding == 2


def test_duplicate_and_unknown_tags_are_ignored(tracker):
    tracker.ack(2, False)
    assert tracker.ack(2, False) == ([], [])      # answered already
    assert tracker.ack(99, False) == ([], [])     # never sent
    assert tracker.nack(2, False) == []
    assert tracker.outstanding == 9


def test_multiple_with_tag_zero_means_all(tracker):
    assert len(tracker.ack(0, True)[0]) == 10
    assert tracker.outstanding == 0


def test_nack_single_and_multiple(tracker):
    assert ids(tracker.nack(5, False)) == ["t5"]
    assert ids(tracker.nack(3, True)) == ["t1", "t2", "t3"]
    assert ids(tracker.ack(10, True)[0]) == ["t4", "t6", "t7", "t8", "t9", "t10"]


def test_mixed_acks_and_nacks_never_count_a_message_twice(tracker):
    seen = []
    seen += ids(tracker.ack(2, True)[0])
    seen += ids(tracker.nack(4, False))
    seen += ids(tracker.ack(6, True)[0])
    seen += ids(tracker.nack(9, True))
    seen += ids(tracker.ack(10, False)[0])
    assert sorted(seen, key=lambda s: int(s[1:])) == [f"t{n}" for n in range(1, 11)]
    assert len(seen) == len(set(seen)) and tracker.outstanding == 0


def test_returned_message_is_unroutable_when_acked(tracker):
    tracker.returned("t3", "unroutable: no queue")
    confirmed, unroutable = tracker.ack(5, True)
    assert ids(confirmed) == ["t1", "t2", "t4", "t5"]
    assert [(i.task_id, r) for i, r in unroutable] == [("t3", "unroutable: no queue")]


def test_lost_channel_returns_the_unconfirmed_in_order_and_restarts_tags(tracker):
    tracker.ack(3, True)
    tracker.ack(6, False)
    tracker.returned("t8", "x")
    lost = tracker.lost()
    assert ids(lost) == ["t4", "t5", "t7", "t8", "t9", "t10"]
    assert tracker.outstanding == 0
    # a new channel numbers from 1 again, and the stale return is forgotten
    assert tracker.sent(lost[3]) == 1
    confirmed, unroutable = tracker.ack(1, False)
    assert ids(confirmed) == ["t8"] and unroutable == []


def test_window_accounting_with_interleaved_sends():
    t = ConfirmTracker()
    window, sent, confirmed = 4, 0, []
    for n in range(1, 21):
        if t.outstanding >= window:
            confirmed += ids(t.ack(t.next_tag - 1 - 2, True)[0])   # broker lags by two messages
        assert t.outstanding < window
        t.sent(item(n))
        sent += 1
    confirmed += ids(t.ack(0, True)[0])
    assert confirmed == [f"t{n}" for n in range(1, 21)]


def test_error_lists_the_failed_ids():
    err = BulkPublishError(BulkResult(confirmed=["a"], failed={f"id{n}": "nack" for n in range(7)}))
    assert "7 task message(s)" in str(err) and "id0 (nack)" in str(err) and "2 more" in str(err)
    assert set(err.failed) == {f"id{n}" for n in range(7)}
