"""`EngineLoop`: one ``Engine`` driven by many concurrent coroutines (no verl, no Ray).

verl's agent loop calls the server's ``generate`` once per sample, all at once. Each call queues its
request and awaits it; a single loop task admits what arrived since the last step, runs one engine step
(in a worker thread, so the event loop keeps taking calls) and resolves the requests that finished. So
requests join the running batch at the next step: continuous batching, with no time window. Every use of
the engine (steps, weight updates, sleep) holds ``self.lock``, so none of them overlaps another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from vortex_rl.rollout import Engine, SamplingParams
from vortex_rl.rollout.sequence import Sequence

logger = logging.getLogger(__name__)


class EngineLoop:
    """Continuous batching over ``engine`` for callers on one asyncio event loop.

    Parameters
    ----------
    engine: the engine; only this loop may use it from now on (see ``exclusive``).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = asyncio.Lock()
        self._pending: list[tuple[list[int], SamplingParams, asyncio.Future]] = []
        self._inflight: dict[int, tuple[list[Sequence], asyncio.Future]] = {}  # head seq_id -> (group, future)
        self._work = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.num_steps = 0  # engine steps run (tests read it)
        self.max_batch = 0  # most requests in flight at one step

    @property
    def num_inflight(self) -> int:
        return len(self._pending) + len(self._inflight)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        """Queue one sample and wait for it; returns its finished ``Sequence`` (``finish_reason`` is
        ``"abort"`` when ``abort_all`` stopped it). Bad input raises the engine's ``ValueError``."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((list(prompt_ids), params, future))
        self._work.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:  # the caller went away: its request must not keep decoding
            async with self.lock:
                # The step in flight is read off the event loop; abort_request's own read is then a no-op.
                await asyncio.to_thread(self.engine.flush)
                self._drop(future)
            raise

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            async with self.lock:
                self._admit()
                if not self.engine.has_unfinished_requests():
                    self._work.clear()
                    continue
                self.max_batch = max(self.max_batch, len(self._inflight))
                try:
                    await asyncio.to_thread(self.engine.step)
                except Exception as error:  # fail the requests in flight, keep serving later ones
                    logger.exception("engine step failed; failing %d requests", len(self._inflight))
                    self.engine.abort_all()
                    self.engine.collect_finished()
                    for _, future in self._inflight.values():
                        _set(future, error=error)
                    self._inflight.clear()
                    continue
                self.num_steps += 1
                self._resolve(self.engine.collect_finished())

    def _admit(self) -> None:
        pending, self._pending = self._pending, []
        for prompt_ids, params, future in pending:
            if future.done():
                continue
            try:
                group = self.engine.add_request(prompt_ids, params)
            except (ValueError, RuntimeError) as error:
                _set(future, error=error)
                continue
            self._inflight[group[0].seq_id] = (group, future)

    def _resolve(self, finished: list[Sequence]) -> None:
        for seq in finished:
            entry = self._inflight.pop(seq.seq_id, None)
            if entry is not None:
                _set(entry[1], result=seq)

    def _drop(self, future: asyncio.Future) -> None:
        self._pending = [p for p in self._pending if p[2] is not future]
        for head, (group, f) in list(self._inflight.items()):
            if f is future:
                self.engine.abort_request(group)
                self._resolve(self.engine.collect_finished())
                self._inflight.pop(head, None)

    async def abort_all(self) -> int:
        """Stop every request (queued or running) now; their callers get their tokens so far with
        ``finish_reason="abort"`` (queued ones: no tokens). Returns how many were stopped."""
        async with self.lock:
            self._admit()  # queued ones become requests with no tokens, aborted below like the rest
            count = len(self._inflight)
            self.engine.abort_all()
            self._resolve(self.engine.collect_finished())
            return count

    @contextlib.asynccontextmanager
    async def exclusive(self, what: str):
        """Hold the engine between steps for ``what`` (a weight update, sleep); refuses while requests
        are in flight, since new weights or a freed cache would corrupt them."""
        async with self.lock:
            if self.num_inflight:
                raise RuntimeError(f"{what} while {self.num_inflight} requests are in flight: abort them "
                                   "(abort_all_requests) or let them finish first")
            await asyncio.to_thread(self.engine.flush)  # a last overlapped step, read off the event loop
            yield self.engine


def _set(future: asyncio.Future, *, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
