"""The serving benchmark's histogram: bins that cover the data, and a PNG even for a partial run."""

import numpy as np

from benchmarks.serving_latency import latency_bins, plot


def test_bins_cover_every_sample_and_not_much_more():
    samples = {"miss_c8": [6.1, 7.5, 48.0], "hit_c1": [0.09, 0.2], "varnish_c8": []}
    bins = latency_bins(samples)
    assert bins[0] < 0.09 and bins[-1] > 48.0
    assert bins[0] > 0.09 / 2 and bins[-1] < 48.0 * 2  # the axis ends near the data, not at 5 s
    counts, _ = np.histogram([v for lat in samples.values() for v in lat], bins=bins)
    assert counts.sum() == 5


def test_bins_for_no_samples_or_one_value_are_still_increasing():
    for samples in ({}, {"miss_c1": [2.0, 2.0]}):
        bins = latency_bins(samples)
        assert np.all(np.diff(bins) > 0)


def test_plot_writes_a_png_with_a_concurrency_missing(tmp_path):
    path = tmp_path / "latency.png"
    rng = np.random.default_rng(0)
    plot({"miss_c1": list(rng.gamma(4, 0.5, 500)), "hit_c8": list(rng.gamma(4, 0.1, 500))}, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
