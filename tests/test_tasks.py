"""TaskTracker holds the loop of its first spawn (get_running_loop costs a syscall on 3.11);
after drain() it serves whichever loop spawns next."""

import asyncio

from shadowproxy.tasks import TaskTracker


async def _spawn_and_drain(tracker: TaskTracker) -> str:
    task = tracker.spawn(asyncio.sleep(0, result="done"), name="t")
    await tracker.drain(1.0)
    return str(task.result())


def test_a_drained_tracker_serves_the_next_loop() -> None:
    tracker = TaskTracker()
    assert asyncio.run(_spawn_and_drain(tracker)) == "done"
    # A new loop: the first one is closed, so a stale loop would fail to create the task.
    assert asyncio.run(_spawn_and_drain(tracker)) == "done"
