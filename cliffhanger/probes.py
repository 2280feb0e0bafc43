"""Watch features land in Bigtable from the outside, as a reader would (benchmarks and the demo).

A `complete` event whose (user, episode) pair occurs once in a stream is visible exactly when its
`done:<episode>` cell appears in the user's row, so polling those cells times the whole path
publish -> Pub/Sub -> pipeline -> Bigtable without instrumenting the pipeline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from cliffhanger.events import EventError, parse_event


def completion_samples(payloads: Sequence[bytes], every: int = 1) -> list[tuple[int, str, str, str]]:
    """(index, user_id, episode_id, event_id) of every `every`-th unique completion in `payloads`."""
    parsed, counts = [], {}
    for i, payload in enumerate(payloads):
        try:
            e = parse_event(payload)
        except EventError:
            continue
        if e.event_type == "complete":
            parsed.append((i, e))
            counts[(e.user_id, e.episode_id)] = counts.get((e.user_id, e.episode_id), 0) + 1
    unique = [(i, e.user_id, e.episode_id, e.event_id) for i, e in parsed if counts[(e.user_id, e.episode_id)] == 1]
    return unique[:: max(1, every)]


class CompletionProber(threading.Thread):
    """Polls the rows of sampled completions; `seen[(user, episode)]` = first wall time it was visible.

    sent_by() -> how many messages have been published so far; only those samples are polled.
    """

    def __init__(self, store, samples: Sequence[tuple[int, str, str]], sent_by: Callable[[], float], poll_s: float):
        super().__init__(daemon=True)
        self._store, self._samples, self._sent_by, self._poll_s = store, samples, sent_by, poll_s
        self.seen: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from transforms.rowkeys import user_key

        while not self.stop.is_set() and len(self.seen) < len(self._samples):
            sent_by = self._sent_by()
            due = [(u, ep) for i, u, ep in self._samples if i <= sent_by + 50 and (u, ep) not in self.seen][:400]
            if due:
                rows = self._store.read([user_key(u) for u, _ in due])
                now = time.time()
                for u, ep in due:
                    row = rows.get(user_key(u))
                    if row is not None and row.get("done", ep) is not None:
                        self.seen[(u, ep)] = now
            time.sleep(self._poll_s)
