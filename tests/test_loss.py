import pytest
import torch
import torch.nn.functional as F

from ccc_nodes.core.loss import RebalancedLoss, ccc_weights, cic_weights


@pytest.mark.parametrize("p", [4.0, 10.0, 16.0])
def test_ccc_weights_on_hand_made_counts(p):
    counts = torch.tensor([1000, 10, 1, 0, 300])
    w = ccc_weights(counts, p=p)
    present = counts > 0
    # most frequent class gets the smallest weight
    assert w[0] == w[present].min()
    # rarest at most (100 + p) / p times it
    ratio = (w.max() / w.min()).item()
    assert ratio <= (100 + p) / p + 1e-5
    # mean weight per pixel is 1
    assert (counts * w).sum().item() / counts.sum().item() == pytest.approx(1.0, abs=1e-6)
    # monotone: rarer present classes weigh more
    assert w[2] > w[1] > w[4] > w[0]


def test_ccc_weights_closed_form():
    counts = torch.tensor([100.0, 50.0])
    m = 10.0
    raw = torch.tensor([(100 + m) / (100 + m), (100 + m) / (50 + m)])
    raw = raw / ((counts * raw).sum() / counts.sum())
    assert torch.allclose(ccc_weights(counts, p=10), raw.float())


def test_ratio_bound_is_reached_for_a_one_pixel_class():
    w = ccc_weights(torch.tensor([10**7, 1]), p=10)
    assert (w[1] / w[0]).item() == pytest.approx(11.0, rel=1e-3)


def test_ccc_weights_of_an_empty_batch_are_ones():
    assert torch.equal(ccc_weights(torch.zeros(5, dtype=torch.long)), torch.ones(5))


def test_ccc_weights_never_branch_on_tensor_values():
    # They run every training step: a Python branch on a tensor value would read a GPU
    # scalar back to the host and stall the step. Dynamo refuses such branches in a
    # full graph, so this fails if one comes back.
    fn = torch.compile(ccc_weights, backend="eager", fullgraph=True)
    counts = torch.tensor([1000, 10, 1, 0, 300])
    assert torch.allclose(fn(counts, p=10.0), ccc_weights(counts, p=10.0))
    assert torch.equal(fn(torch.zeros(5, dtype=torch.long), p=10.0), torch.ones(5))


def test_cic_weights_normalised_and_inverse_to_prior():
    counts = torch.tensor([800.0, 150.0, 50.0])
    w = cic_weights(counts, lam=0.5)
    prior = counts / counts.sum()
    assert (prior * w).sum().item() == pytest.approx(1.0, abs=1e-6)
    assert w[0] < w[1] < w[2]


def test_loss_matches_manual_weighted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4)
    target = torch.randint(0, 5, (2, 4, 4))
    target[0, 0, :] = 0
    ce = F.cross_entropy(logits, target, reduction="none")
    w = ccc_weights(torch.bincount(target.flatten(), minlength=5), p=10)
    expected = (ce * w[target]).sum() / target.numel()
    assert RebalancedLoss("ccc", p=10)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    assert RebalancedLoss("none")(logits, target).item() == pytest.approx(ce.mean().item(), rel=1e-5)
    cic = RebalancedLoss("cic", class_counts=torch.tensor([5.0, 4, 3, 2, 1]))
    assert cic(logits, target).item() != pytest.approx(ce.mean().item(), rel=1e-3)


def test_loss_errors():
    with pytest.raises(ValueError, match="rebalancing"):
        RebalancedLoss("zhang")
    with pytest.raises(ValueError, match="class_counts"):
        RebalancedLoss("cic")
