"""Load a recommendation split directory: `train.txt`, `valid.txt`, `test.txt`, lines `user item label`.

The format is the one of ../shared/data/kuairec (SIGformer's split of KuaiRec): whitespace-separated
`user_id item_id label`, no header, one labelled (user, item) pair per line. A label >= the positive
threshold (1.0, SIGformer's `--offset=1`) is a positive; anything lower is an explicit negative
(a skip). Ids are arbitrary tokens (ints or strings); they are re-indexed to 0..n-1 over the union of
the three files, so every item that appears anywhere is part of the "all items" that evaluation ranks.
If every token of a kind is an integer they are ordered numerically (kuairec's ids map to themselves),
otherwise in order of first appearance.

Every problem with the input raises `SplitError`, whose message names the file (and line when
there is one): a missing directory or file, an empty file, a line with the wrong number of
columns, a non-numeric or non-finite label, a file that is not UTF-8 text.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

SPLIT_FILES = ("train", "valid", "test")
POSITIVE_THRESHOLD = 1.0


class SplitError(ValueError):
    """Bad split input. `path` is the offending file or directory, `line` its 1-based line (0 = none)."""

    def __init__(self, path: str, message: str, line: int = 0):
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Labelled pairs of one split part, as parallel arrays of equal length n.

    users: [n] int64 user index; items: [n] int64 item index; labels: [n] float32 raw label.
    `order` keeps file order, which is time order when the producer wrote it so (the synthetic split).
    """

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    positive_threshold: float = POSITIVE_THRESHOLD

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def is_positive(self) -> np.ndarray:
        """[n] bool."""
        return self.labels >= self.positive_threshold

    def positives(self) -> Interactions:
        keep = self.is_positive
        return Interactions(self.users[keep], self.items[keep], self.labels[keep], self.positive_threshold)

    def negatives(self) -> Interactions:
        keep = ~self.is_positive
        return Interactions(self.users[keep], self.items[keep], self.labels[keep], self.positive_threshold)


@dataclasses.dataclass(frozen=True)
class Split:
    """A loaded split: three `Interactions` over one shared id space.

    user_ids[u] / item_ids[i] are the original tokens of index u / i (strings).
    """

    name: str
    train: Interactions
    valid: Interactions
    test: Interactions
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def part(self, name: str) -> Interactions:
        if name not in SPLIT_FILES:
            raise ValueError(f"unknown split part {name!r}; expected one of {SPLIT_FILES}")
        return getattr(self, name)

    def summary(self) -> dict:
        out: dict = {"name": self.name, "users": self.n_users, "items": self.n_items}
        for name in SPLIT_FILES:
            part = self.part(name)
            n_pos = int(part.is_positive.sum())
            out[name] = {"pairs": len(part), "positives": n_pos, "negatives": len(part) - n_pos}
        return out


def _read_rows(path: str) -> list[tuple[str, str, float]]:
    if not os.path.isfile(path):
        raise SplitError(path, "file not found (a split directory needs train.txt, valid.txt and test.txt)")
    rows: list[tuple[str, str, float]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if "\x00" in raw:
                    raise SplitError(path, "binary data (NUL byte); expected text lines `user item label`", lineno)
                fields = raw.split()
                if not fields:
                    continue  # blank lines (e.g. a trailing newline) carry no pair
                if len(fields) != 3:
                    shown = raw.strip()[:60]
                    raise SplitError(
                        path,
                        f"expected 3 whitespace-separated columns `user item label`, got {len(fields)}: {shown!r}",
                        lineno,
                    )
                user, item, label_text = fields
                try:
                    label = float(label_text)
                except ValueError:
                    raise SplitError(path, f"label {label_text[:30]!r} is not a number", lineno) from None
                if not math.isfinite(label):
                    raise SplitError(path, f"label {label_text[:30]!r} is not finite", lineno)
                rows.append((user, item, label))
    except UnicodeDecodeError as exc:
        raise SplitError(
            path, f"not UTF-8 text ({exc.reason} at byte {exc.start}); expected lines `user item label`"
        ) from None
    if not rows:
        raise SplitError(path, "empty file: no `user item label` lines")
    return rows


def _vocabulary(token_lists: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Tokens in index order: numeric order if all are integers, else order of first appearance."""
    seen: dict[str, None] = {}
    for tokens in token_lists:
        for token in tokens:
            seen.setdefault(token, None)
    tokens = list(seen)
    try:
        as_int = [int(t) for t in tokens]
    except ValueError:
        return tuple(tokens)
    if len(set(as_int)) == len(tokens):  # "7" and "07" would collide numerically: keep appearance order then
        return tuple(t for _, t in sorted(zip(as_int, tokens, strict=True)))
    return tuple(tokens)


def from_rows(
    name: str,
    parts: dict[str, list[tuple[str, str, float]]],
    positive_threshold: float = POSITIVE_THRESHOLD,
    item_universe: Sequence[str] = (),
) -> Split:
    """Build a `Split` from in-memory rows {'train': [(user, item, label), ...], 'valid': ..., 'test': ...}.

    `item_universe`: items to rank even if no row mentions them (e.g. a catalog's unwatched episodes).
    """
    user_ids = _vocabulary([[r[0] for r in parts[p]] for p in SPLIT_FILES])
    item_ids = _vocabulary([[r[1] for r in parts[p]] for p in SPLIT_FILES] + [list(item_universe)])
    user_index = {t: i for i, t in enumerate(user_ids)}
    item_index = {t: i for i, t in enumerate(item_ids)}
    built = {}
    for p in SPLIT_FILES:
        rows = parts[p]
        built[p] = Interactions(
            users=np.fromiter((user_index[r[0]] for r in rows), dtype=np.int64, count=len(rows)),
            items=np.fromiter((item_index[r[1]] for r in rows), dtype=np.int64, count=len(rows)),
            labels=np.fromiter((r[2] for r in rows), dtype=np.float32, count=len(rows)),
            positive_threshold=positive_threshold,
        )
    return Split(name=name, user_ids=user_ids, item_ids=item_ids, **built)


def load_split(data_dir: str, positive_threshold: float = POSITIVE_THRESHOLD) -> Split:
    """Read `data_dir/{train,valid,test}.txt` into a `Split`; raises `SplitError` naming the bad file/line."""
    if not os.path.exists(data_dir):
        raise SplitError(data_dir, "split directory not found")
    if not os.path.isdir(data_dir):
        raise SplitError(data_dir, "not a directory (expected a directory holding train.txt, valid.txt, test.txt)")
    parts = {p: _read_rows(os.path.join(data_dir, f"{p}.txt")) for p in SPLIT_FILES}
    split = from_rows(os.path.basename(os.path.normpath(data_dir)), parts, positive_threshold)
    if not split.train.is_positive.any():
        raise SplitError(
            os.path.join(data_dir, "train.txt"),
            f"no positive pairs (label >= {positive_threshold:g}); nothing to learn from",
        )
    for p in ("valid", "test"):
        if not split.part(p).is_positive.any():
            raise SplitError(
                os.path.join(data_dir, f"{p}.txt"),
                f"no positive pairs (label >= {positive_threshold:g}); nothing to evaluate",
            )
    return split


def write_split(data_dir: str, parts: dict[str, Sequence[tuple[object, object, float]]]) -> None:
    """Write rows {'train': [(user, item, label), ...], ...} in the split format (for tests and converters)."""
    os.makedirs(data_dir, exist_ok=True)
    for p in SPLIT_FILES:
        with open(os.path.join(data_dir, f"{p}.txt"), "w", encoding="utf-8") as handle:
            for user, item, label in parts[p]:
                handle.write(f"{user} {item} {float(label):.2f}\n")
