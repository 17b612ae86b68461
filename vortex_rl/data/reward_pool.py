"""`RewardPool`: score responses in worker processes, each answer under a time limit.

math-verify (and sympy under it) can run for minutes on a pathological answer. Each answer runs in
the main thread of a worker process under a ``SIGALRM`` interval timer; a time-out or an exception
scores 0 and is counted, never raised. A worker stuck in C code that ignores the alarm is caught by
a watchdog in the parent: when no answer completes for ``timeout_s + grace_s`` seconds the pending
answers count as time-outs and the pool is replaced.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from vortex_rl.data.math_reward import REWARDS

RewardFn = Callable[[str, str], float]


@dataclass
class RewardResult:
    """Scores of one batch and what went wrong while computing them."""

    scores: list[float]
    num_timeouts: int = 0
    num_errors: int = 0
    errors: list[str] = field(default_factory=list)  # the first few error messages, for the log


class _AnswerTimeout(BaseException):
    # BaseException so that `except Exception` blocks inside math-verify/sympy do not swallow it.
    pass


def _raise_timeout(signum, frame):
    raise _AnswerTimeout()


def score_with_timeout(fn: RewardFn, response: str, ground_truth: str, timeout_s: float) -> tuple[float, str, str]:
    """``(score, status, message)`` with status ``"ok"``, ``"timeout"`` or ``"error"``; main thread only."""
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        score = float(fn(response, ground_truth))
        if not math.isfinite(score):
            return 0.0, "error", f"reward returned {score}"
        return score, "ok", ""
    except _AnswerTimeout:
        return 0.0, "timeout", f"no result within {timeout_s}s"
    except Exception as e:  # noqa: BLE001 - any failure of a reward scores 0 and is counted
        return 0.0, "error", f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _warm_worker(fn: RewardFn) -> None:
    # Import the reward's dependencies (sympy takes ~1 s) before the first timed answer.
    try:
        fn("\\boxed{1}", "1")
    except Exception:  # noqa: BLE001 - a failing warm-up shows up again, counted, on real answers
        pass


class RewardPool:
    """Score ``(response, ground_truth)`` pairs with a registered reward in worker processes.

    Parameters
    ----------
    reward:
        A registered reward name (``REWARDS.names()``) or a top-level function ``(str, str) -> float``.
    num_workers:
        Worker processes; 0 scores in the calling thread (which must be the main thread).
    timeout_s:
        Time limit per answer in seconds.
    grace_s:
        Extra seconds the parent waits without any progress before declaring workers stuck.

    Workers are spawned (not forked): a script that scores with workers must guard its entry point with
    ``if __name__ == "__main__":``, as for any ``multiprocessing`` spawn.
    """

    def __init__(self, reward: str | RewardFn, *, num_workers: int = 2, timeout_s: float = 5.0,
                 grace_s: float = 30.0) -> None:
        self.fn: RewardFn = REWARDS.get(reward) if isinstance(reward, str) else reward
        if num_workers < 0 or timeout_s <= 0 or grace_s < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0, timeout_s={timeout_s} > 0, grace_s={grace_s} >= 0")
        self.num_workers, self.timeout_s, self.grace_s = num_workers, float(timeout_s), float(grace_s)
        self._pool = None

    def score(self, responses: Sequence[str], ground_truths: Sequence[str]) -> RewardResult:
        """Scores in input order; failures and time-outs score 0 and are counted in the result."""
        if len(responses) != len(ground_truths):
            raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
        if self.num_workers == 0:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("RewardPool(num_workers=0) uses SIGALRM and must run in the main thread")
            outcomes = [score_with_timeout(self.fn, r, g, self.timeout_s) for r, g in zip(responses, ground_truths)]
        else:
            outcomes = self._score_in_workers(responses, ground_truths)
        return _summarise(outcomes)

    def _score_in_workers(self, responses: Sequence[str], ground_truths: Sequence[str]) -> list[tuple[float, str, str]]:
        pool = self._ensure_pool()
        done: queue.Queue = queue.Queue()
        for i, (r, g) in enumerate(zip(responses, ground_truths)):
            pool.apply_async(
                score_with_timeout, (self.fn, r, g, self.timeout_s),
                callback=lambda out, i=i: done.put((i, out)),
                error_callback=lambda e, i=i: done.put((i, (0.0, "error", f"{type(e).__name__}: {e}"[:300]))),
            )
        outcomes: list[tuple[float, str, str] | None] = [None] * len(responses)
        for _ in range(len(responses)):
            try:
                i, out = done.get(timeout=self.timeout_s + self.grace_s)
            except queue.Empty:
                self.close()  # a worker ignores its alarm: kill the pool, count what is left
                break
            outcomes[i] = out
        stuck = (0.0, "timeout", "worker stopped responding; pool restarted")
        return [out if out is not None else stuck for out in outcomes]

    def _ensure_pool(self):
        if self._pool is None:
            # spawn: forking a process that holds torch threads can deadlock the child.
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.num_workers, initializer=_warm_worker, initargs=(self.fn,))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (the next ``score`` starts new ones)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _summarise(outcomes: list[tuple[float, str, str]]) -> RewardResult:
    result = RewardResult(scores=[score for score, _, _ in outcomes])
    for _, status, message in outcomes:
        result.num_timeouts += status == "timeout"
        result.num_errors += status == "error"
        if status != "ok" and len(result.errors) < 5:
            result.errors.append(message)
    return result
