import itertools

import pytest
import torch

from ccc_nodes.core.classes import PAPER_MIN_COUNT, PAPER_MIN_FRACTION, PAPER_SAMPLES, ColorClasses, min_count


def _ab(a, b):
    return torch.tensor([[[a]], [[b]]], dtype=torch.float32)


def test_neutral_is_666_at_bin_size_6():
    assert ColorClasses(6).quantize(_ab(0.0, 0.0)).item() == 666


@pytest.mark.parametrize("s,total", [(4, 2916), (6, 1296), (8, 784), (10, 484), (12, 324), (14, 256)])
def test_table_II_class_totals(s, total):
    assert ColorClasses(s).num_bins == total


@pytest.mark.parametrize("s", range(4, 15))
def test_round_trip_deviation_is_s_over_2_max_and_s_over_4_mean(s):
    codec = ColorClasses(s)
    # A fine grid over the whole covered a*b* square (inside its edges).
    v = torch.linspace(-codec.shift + 1e-3, codec.shift - 1e-3, 601)
    a, b = torch.meshgrid(v, v, indexing="ij")
    ab = torch.stack([a, b])
    back = codec.decode(codec.encode(ab))
    dev = (back - ab).abs()
    assert dev.max().item() <= s / 2 + 1e-4
    assert dev.max().item() > s / 2 - 0.05  # the bound is reached, not loose
    assert abs(dev.mean().item() - s / 4) < 0.01


@pytest.mark.slow
def test_nearest_kept_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    kept = torch.randperm(1296, generator=g)[:137].tolist()
    codec = ColorClasses(6, kept)
    ks = sorted(kept)
    for q in range(1296):
        cq = codec.bin_centers(torch.tensor(q))
        best, best_d = None, None
        for k, kq in enumerate(ks):  # ascending q, strict '<' keeps the lower index on ties
            d = float(((codec.bin_centers(torch.tensor(kq)) - cq) ** 2).sum())
            if best_d is None or d < best_d:
                best, best_d = k, d
        assert codec.lut[q].item() == best, q


def test_ties_go_to_lower_index():
    # bins 0 and 2 are equidistant from bin 1
    codec = ColorClasses(6, [0, 2])
    assert codec.lut[1].item() == 0


def test_kept_classes_decode_to_their_own_centres():
    codec = ColorClasses(6, [100, 666, 900])
    ab = codec.centers.T.reshape(2, 1, 3)
    assert codec.encode(ab).flatten().tolist() == [0, 1, 2]
    assert torch.allclose(codec.decode(torch.tensor([[1]]))[:, 0, 0], torch.tensor([3.0, 3.0]))


def test_from_histogram_keeps_by_fraction_and_scales_with_data():
    counts = torch.zeros(1296, dtype=torch.long)
    counts[[10, 20, 666]] = torch.tensor([5, 1000, 94995])
    codec = ColorClasses.from_histogram(counts, 6, min_fraction=1e-4)  # 10 of 100,000
    assert codec.kept.tolist() == [20, 666]
    codec10 = ColorClasses.from_histogram(counts * 10, 6, min_fraction=1e-4)
    assert torch.equal(codec10.kept, codec.kept)
    assert codec.K == 2 and codec.lut[10].item() == 0  # bin 10 folds into 20, the nearer kept bin
    assert pytest.approx(4.55e-6, rel=1e-3) == PAPER_MIN_FRACTION


def test_kept_means_at_least_the_papers_500_of_109885440():
    # The paper keeps classes with at least 500 of its 109,885,440 samples; in floating
    # point 500 / 109,885,440 x 109,885,440 is 500.00000000000006, so a float comparison
    # dropped a bin of exactly 500.
    assert PAPER_MIN_FRACTION * PAPER_SAMPLES > PAPER_MIN_COUNT
    assert min_count(PAPER_MIN_FRACTION, PAPER_SAMPLES) == 500
    counts = torch.zeros(1296, dtype=torch.long)
    counts[[100, 200, 300]] = torch.tensor([499, 500, 501])
    counts[666] = PAPER_SAMPLES - counts.sum()
    assert counts.sum().item() == 109_885_440
    codec = ColorClasses.from_histogram(counts, 6)
    assert codec.kept.tolist() == [200, 300, 666]
    # float counts (e.g. a histogram summed in float64) follow the same integer rule
    assert ColorClasses.from_histogram(counts.double(), 6).kept.tolist() == [200, 300, 666]
    with pytest.raises(ValueError, match="whole numbers"):
        ColorClasses.from_histogram(counts.double() + 0.5, 6)


def test_histogram_counts_every_sample():
    codec = ColorClasses(6)
    ab = torch.randn(2, 2, 8, 8) * 30
    h = codec.histogram(ab)
    assert h.sum().item() == 128 and h.shape == (1296,)


def test_config_round_trip_and_errors():
    codec = ColorClasses(8, [5, 1, 3])
    assert ColorClasses.from_config(codec.to_config()) == codec
    assert codec.kept.tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match=r"4\.\.14"):
        ColorClasses(3)
    with pytest.raises(ValueError, match=r"0\.\.783"):
        ColorClasses(8, [784])
    with pytest.raises(ValueError, match="bins"):
        ColorClasses.from_histogram(torch.ones(10), 6)


def test_encode_clips_values_outside_the_grid():
    codec = ColorClasses(6)
    q = codec.quantize(torch.tensor([[[500.0, -500.0]], [[500.0, -500.0]]]))
    assert q.flatten().tolist() == [1295, 0]
    assert list(itertools.chain(codec.encode(torch.zeros(3, 2, 4, 5)).shape)) == [3, 4, 5]
