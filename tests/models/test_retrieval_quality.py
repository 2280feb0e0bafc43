"""benchmarks/retrieval_quality.py end to end on tiny inputs (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.retrieval_quality import main, run
from models.splits import write_split


def _random_split(path, n_users=40, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    pop = rng.dirichlet(np.ones(n_items) * 0.5)
    parts = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        items = rng.choice(n_items, size=12, replace=False, p=pop)
        for k, i in enumerate(items):
            part = "train" if k < 8 else ("valid" if k < 9 else "test")
            parts[part].append((f"U{u:03d}", f"video_{i}", float(rng.random() < 0.6)))
    write_split(str(path), parts)


def test_run_end_to_end_on_string_id_split(tmp_path):
    _random_split(tmp_path / "split")
    out = tmp_path / "res.json"
    result = run(["--data-dir", str(tmp_path / "split"), "--out", str(out), "--epochs", "2", "--no-progress"])
    on_disk = json.loads(out.read_text())
    for name in ("two_tower", "popularity", "ease"):
        assert set(on_disk[name]) == {"recall@20", "ndcg@20", "recall@100", "hit@20"}
        assert 0.0 <= on_disk[name]["recall@20"] <= 1.0
    assert on_disk["selected_on"] == "valid"
    assert (tmp_path / "res_curve.png").stat().st_size > 1000
    assert result["two_tower"] == on_disk["two_tower"]


def test_synthetic_time_split(tmp_path):
    out = tmp_path / "synth.json"
    result = run(["--synthetic", "--out", str(out), "--epochs", "1", "--no-progress"])
    assert result["dataset"]["source"] == "synthetic"
    assert result["dataset"]["items"] > 0 and "two_tower" in result


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")])
    assert "missing" in str(exit_info.value.code) and "not found" in str(exit_info.value.code)
