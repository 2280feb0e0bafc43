"""One way to run a component's `run()` loop in the background of the event loop, and stop it."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundLoop:
    """Mixin: `start()` schedules `self.run()` (a coroutine that loops until cancelled); `stop()` cancels it."""

    _task: asyncio.Task | None = None

    async def run(self) -> None:  # pragma: no cover - each component defines its loop
        raise NotImplementedError

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the cancellation we asked for
                await self._task
            self._task = None
