"""Object-selective harmonisation (METHOD.md section 9) on synthetic predictions whose
right answer is known: salt noise inside an object goes, everything else stays."""

import pytest
import torch

from ccc_nodes import ColorClasses, Prediction
from ccc_nodes.core.metrics import class_map
from ccc_nodes.steps.harmonize import HarmonizedPrediction, harmonize, masks_fit
from ccc_nodes.steps.masks import MaskSet, generate_masks, given_masks

CLASSES = ColorClasses(6)
SCALE = 4  # model resolution is 1/4 of the image, as the network's
h, w = 32, 32  # model resolution
H, W = h * SCALE, w * SCALE


def cls_of(a: float, b: float) -> int:
    return int(CLASSES.encode(torch.tensor([a, b]).view(2, 1, 1)))


RED, BLUE, GREEN = cls_of(40, 25), cls_of(10, -40), cls_of(-45, 40)


def prediction_of(cmap: torch.Tensor) -> Prediction:
    """A Prediction whose argmax is ``cmap`` ``(h, w)``, with flat grey L = 60."""
    logits = torch.full((1, CLASSES.K, h, w), -10.0)
    logits.scatter_(1, cmap.view(1, 1, h, w), 10.0)
    return Prediction(L=torch.full((1, 1, H, W), 60.0), logits=logits, classes=CLASSES)


def two_objects(noise: float = 0.15, seed: int = 0):
    """Left half RED with salt noise of wrong classes, right half BLUE, clean."""
    g = torch.Generator().manual_seed(seed)
    cmap = torch.full((h, w), BLUE)
    cmap[:, : w // 2] = RED
    salt = (torch.rand(h, w, generator=g) < noise) & (torch.arange(w) < w // 2 - 1)
    wrong = torch.tensor([GREEN, BLUE, cls_of(-20, -30), cls_of(0, 60)])
    cmap[salt] = wrong[torch.randint(0, 4, (int(salt.sum()),), generator=g)]
    left = torch.zeros(H, W, dtype=torch.bool)
    left[:, : W // 2] = True
    return prediction_of(cmap), torch.stack((left, ~left)), salt


def deviation(ab: torch.Tensor, cls: int) -> torch.Tensor:
    """a*b* distance ``(H, W)`` of ``(1, 2, H, W)`` from a class's centre."""
    return (ab[0] - CLASSES.centers[cls].view(2, 1, 1)).norm(dim=0)


def crossing(ab: torch.Tensor) -> torch.Tensor:
    """Per row, the first column where a* falls below the midpoint of RED and BLUE."""
    mid = (CLASSES.centers[RED, 0] + CLASSES.centers[BLUE, 0]) / 2
    return (ab[0, 0] < mid).float().argmax(dim=1)


def test_salt_noise_inside_object_is_made_uniform():
    pred, masks, _ = two_objects()
    ab0 = torch.nn.functional.interpolate(pred.ab(), size=(H, W), mode="bilinear")
    ab1 = harmonize(pred, masks).ab()
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[:, : W // 2 - 4] = True  # the left object, away from the boundary
    dev0, dev1 = deviation(ab0, RED)[inner], deviation(ab1, RED)[inner]
    assert dev0.max() > 40 and (dev0 > 12).float().mean() > 0.1  # the noise is there
    assert dev1.max() <= 12.0 + 1e-3  # nothing farther than max_dev from the object's colour
    assert dev1.mean() < dev0.mean() / 4
    # Its class map (at the masks' resolution) is the object's class wherever it was replaced.
    out = harmonize(pred, masks)
    assert out.changed > 0.05 and out.masks_used == 2
    assert (out.harmonized_class_map[0][inner] == RED).float().mean() > 0.85


def test_neighbour_keeps_its_colour_and_the_boundary_stays():
    pred, masks, _ = two_objects()
    ab0 = torch.nn.functional.interpolate(pred.ab(), size=(H, W), mode="bilinear")
    ab1 = harmonize(pred, masks).ab()
    right = torch.zeros(H, W, dtype=torch.bool)
    right[:, W // 2 + 4 :] = True
    assert torch.equal(ab1[0][:, right], ab0[0][:, right])  # the clean object is untouched
    assert deviation(ab1, BLUE)[right].max() < 1e-4
    # The colour edge stays at the object boundary (within a pixel on every row).
    assert (crossing(ab1) - W // 2).abs().max() <= 1
    clean = torch.nn.functional.interpolate(two_objects(noise=0.0)[0].ab(), size=(H, W), mode="bilinear")
    assert (crossing(ab1) - crossing(clean)).abs().max() <= 1  # where it was without the noise


def test_rgb_is_harmonised_at_full_size_and_L_is_kept():
    pred, masks, _ = two_objects()
    out = harmonize(pred, masks)
    assert isinstance(out, HarmonizedPrediction) and isinstance(out, Prediction)
    rgb = out.rgb()
    assert rgb.shape == (1, 3, H, W)
    # The picture's own colour classes now agree with the object far more than before.
    inner = (slice(None), slice(None), slice(None), slice(0, W // 2 - 4))
    tar = lambda x: (class_map(x[inner], CLASSES, SCALE) == RED).float().mean()  # noqa: E731
    assert tar(rgb) > tar(pred.rgb()) + 0.1
    from ccc_nodes.core.color import rgb_to_lab

    assert torch.allclose(rgb_to_lab(rgb)[:, :1], pred.L, atol=0.05)
    # Other decode modes are harmonised too.
    assert out.ab("annealed-mean").shape == (1, 2, H, W)


def test_masks_without_a_dominant_class_or_too_small_change_nothing():
    # A checkerboard of four classes: no class holds 30% of the mask.
    four = torch.tensor([RED, BLUE, GREEN, cls_of(0, 60)])
    cmap = four[(torch.arange(h).view(-1, 1) // 2 % 2) * 2 + (torch.arange(w) // 2 % 2)]
    pred = prediction_of(cmap)
    full = torch.ones(1, H, W, dtype=torch.bool)
    out = harmonize(pred, full)
    assert out.changed == 0 and out.masks_used == 0
    ab0 = torch.nn.functional.interpolate(pred.ab(), size=(H, W), mode="bilinear")
    assert torch.equal(out.ab(), ab0)
    # The same noisy object is left alone when its mask is under min_area.
    pred, masks, _ = two_objects()
    assert harmonize(pred, masks, min_area=0.6).changed == 0


def test_smaller_masks_decide_for_their_own_pixels():
    """A mask of the whole image (mostly RED) must not repaint the BLUE object inside it
    that has its own mask: the most specific object wins."""
    cmap = torch.full((h, w), RED)
    cmap[8:16, 8:16] = BLUE
    pred = prediction_of(cmap)
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[32:64, 32:64] = True
    everything = torch.ones(H, W, dtype=torch.bool)
    alone = harmonize(pred, everything[None], sigma=0)
    assert deviation(alone.ab(), RED)[inner].max() < 1e-4  # the big mask alone repaints it
    both = harmonize(pred, torch.stack((everything, inner)), sigma=0)
    core = torch.zeros_like(inner)
    core[34:62, 34:62] = True
    assert deviation(both.ab(), BLUE)[core].max() < 1e-4


def test_masks_at_another_resolution_and_bad_inputs():
    pred, masks, _ = two_objects()
    half = given_masks(masks.float(), size=(H // 2, W // 2))
    out = harmonize(pred, half)
    assert out.ab().shape == (1, 2, H // 2, W // 2) and out.rgb().shape == (1, 3, H, W)
    assert out.source == "given"
    with pytest.raises(ValueError, match="aspect ratio"):
        harmonize(pred, torch.ones(1, H, W // 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="Prediction"):
        harmonize(pred.logits, masks)
    batch = Prediction(L=pred.L.repeat(2, 1, 1, 1), logits=pred.logits.repeat(2, 1, 1, 1), classes=CLASSES)
    with pytest.raises(ValueError, match="loop"):
        harmonize(batch, masks)
    assert len(MaskSet(masks, "given")) == 2


def long_thin_prediction(H0: int = 20, W0: int = 20000) -> Prediction:
    """A Prediction of a long thin image: a grey ramp along it, RED and BLUE halves."""
    g = torch.Generator().manual_seed(0)
    L = (torch.linspace(20, 80, W0).view(1, 1, 1, W0) + torch.rand(1, 1, H0, W0, generator=g)).expand(1, 1, H0, W0).clone()
    cmap = torch.full((16, 16), BLUE)
    cmap[:, :8] = RED
    logits = torch.full((1, CLASSES.K, 16, 16), -10.0)
    logits.scatter_(1, cmap.view(1, 1, 16, 16), 10.0)
    return Prediction(L=L, logits=logits, classes=CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(20, 20000), (20000, 20), (3, 9000)])
def test_long_thin_images_take_their_own_generated_masks(shape):
    """generate_masks of a 20000x20 image made masks that harmonize refused."""
    pred = long_thin_prediction(*shape)
    masks = generate_masks(pred, "classical")
    out = harmonize(pred, masks)
    assert out.rgb().shape == (1, 3, *shape)
    assert len(masks) >= 1 and out.ab().shape[-2:] == masks.size


def test_masks_of_the_image_scaled_with_rounding_are_accepted():
    # 20000x20 scaled to a longer side of 512: 512x0.512, rounded to one row.
    assert masks_fit((20, 20000), (1, 512)) and masks_fit((20000, 20), (512, 1))
    assert masks_fit((20, 20000), (16, 16000)) and masks_fit((333, 500), (341, 512))
    pred = long_thin_prediction()
    out = harmonize(pred, torch.ones(1, 1, 512, dtype=torch.bool))
    assert out.rgb().shape == (1, 3, 20, 20000)
    # Off by more than a pixel a side, or another shape altogether: refused.
    assert not masks_fit((20, 20000), (3, 512)) and not masks_fit((128, 128), (128, 64))
    assert not masks_fit((20, 20000), (20, 512)) and not masks_fit((20, 20000), (0, 512))
    with pytest.raises(ValueError, match="aspect ratio"):
        harmonize(pred, torch.ones(1, 20, 512, dtype=torch.bool))
