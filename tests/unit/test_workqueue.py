"""The operator's work queue coalesces keys and never hands one key to two workers."""

from __future__ import annotations

import asyncio

from edgewise.controller.queue import WorkQueue


def test_adding_a_key_twice_queues_it_once() -> None:
    async def go() -> None:
        q = WorkQueue()
        q.add("a")
        q.add("a")
        q.add("b")
        assert q.pending() == 2
        assert [await q.get(), await q.get()] == ["a", "b"]

    asyncio.run(go())


def test_a_key_added_while_processing_is_processed_again_afterwards_not_concurrently() -> None:
    async def go() -> None:
        q = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # an event arrives mid-reconcile
        assert q._ready.empty()  # not handed to a second worker
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == "a"
        q.done("a")
        assert q.pending() == 0

    asyncio.run(go())


def test_delayed_adds_keep_the_earliest_due_time() -> None:
    async def go() -> None:
        q = WorkQueue()
        q.add_after("a", 30)
        q.add_after("a", 0.01)
        q.add_after("a", 60)
        assert await asyncio.wait_for(q.get(), 1) == "a"
        q.done("a")
        assert q._timers == {}
        q.close()

    asyncio.run(go())


def test_only_node_changes_that_can_change_a_classification_trigger_a_replan() -> None:
    from edgewise.controller.workers import ALL, Controller

    async def go() -> None:
        c = Controller(reconciler=None)  # type: ignore[arg-type]  # only the queue is exercised
        c.node_changed(None, "n1", {"kubernetes.io/arch": "arm64"}, [])
        assert await c.queue.get() == ALL
        c.queue.done(ALL)
        c.node_changed("MODIFIED", "n1", {"kubernetes.io/arch": "arm64"}, [])  # a heartbeat
        assert c.queue.pending() == 0
        c.node_changed("MODIFIED", "n1", {"kubernetes.io/arch": "arm64", "gpu": "x"}, [])  # relabelled
        assert c.queue.pending() == 1
        await c.queue.get()
        c.queue.done(ALL)
        c.node_changed(
            "MODIFIED", "n1", {"kubernetes.io/arch": "arm64", "gpu": "x"}, [{"key": "k", "effect": "NoSchedule"}]
        )  # tainted
        assert c.queue.pending() == 1
        await c.queue.get()
        c.queue.done(ALL)
        c.node_changed("DELETED", "n1", {}, [])
        assert c.queue.pending() == 1

    asyncio.run(go())


def test_waiting_keys_and_the_age_of_the_oldest_count_only_keys_not_yet_handed_out() -> None:
    async def go() -> None:
        q = WorkQueue()
        assert (q.waiting(), q.oldest_age()) == (0, 0.0)
        q.add("a")
        q.add("b")
        assert q.waiting() == 2 and q.oldest_age() >= 0.0
        key = await q.get()
        q.add(key)  # re-added while processed: waits again only once it is done
        assert q.waiting() == 1
        q.done(key)
        assert q.waiting() == 2
        await q.get()
        await q.get()
        assert (q.waiting(), q.oldest_age()) == (0, 0.0)

    asyncio.run(go())
