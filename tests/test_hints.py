"""Colour hints (ccc_nodes.steps.hints): the formula's promises, point growth, the reference
palette, and the Python API, CLI and node that carry them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from PIL import Image

from ccc_nodes import Colorizer
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.prediction import join_lab
from ccc_nodes.steps.harmonize import HarmonizedPrediction, harmonize
from ccc_nodes.steps.hints import (
    AB_LIMIT,
    MAX_HINTS,
    GlobalHint,
    Hint,
    HintError,
    apply_hints,
    grow_point,
    hints_for,
    load_hints,
    palette_prior,
    parse_color,
    parse_hint,
)
from ccc_nodes.steps.masks import MaskSet

RED = "#c0392b"
MUTED = "#8a9a5b"  # moss green: inside sRGB on both tones of the test image


@pytest.fixture(scope="module")
def colorizer():
    return Colorizer(device="cpu")  # the embedded default: its classes cover the colours asked for


@pytest.fixture(scope="module")
def two_tone() -> np.ndarray:
    """A grey image: a darker disc on a lighter ground, with a little noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:120, :160]
    im = np.where((yy - 60) ** 2 + (xx - 50) ** 2 < 35**2, 90, 170).astype(np.float64)
    return np.clip(im + rng.normal(0, 3, im.shape), 0, 255).astype(np.uint8)


def lab_of(rgb: torch.Tensor) -> torch.Tensor:
    return rgb_to_lab(rgb)[0]


def test_parse_color_gives_the_colours_a_b_and_refuses_what_it_cannot_read():
    from skimage.color import rgb2lab

    want = rgb2lab(np.array([[[0xC0, 0x39, 0x2B]]]) / 255)[0, 0, 1:]
    assert np.allclose(parse_color(RED), want, atol=1e-3)
    assert np.allclose(parse_color((0xC0, 0x39, 0x2B)), want, atol=1e-3)
    assert np.allclose(parse_color("C0392B"), want, atol=1e-3)
    assert parse_color({"a": 10, "b": -20}) == (10.0, -20.0)
    for bad in ("red", "#12345", (300, 0, 0), 5):
        with pytest.raises(HintError):
            parse_color(bad)
    with pytest.raises(HintError, match="strength"):
        Hint.at(1, 1, RED, strength=1.5)
    with pytest.raises(HintError, match="exactly one"):
        Hint(ab=(0, 0))


def test_strength_zero_changes_nothing(colorizer, two_tone):
    pred = colorizer.predict(two_tone)[0]
    out = apply_hints(pred, [Hint.at(50, 60, RED, strength=0.0), Hint.on(np.ones((120, 160)), "#2e86c1", 0.0)])
    assert torch.equal(out.logits, pred.logits)
    assert torch.equal(apply_hints(pred, [], reference=GlobalHint(torch.zeros(pred.classes.K), 0.0)).logits,
                       pred.logits)


@pytest.mark.parametrize("decode", ["argmax", "annealed-mean"])
def ideal(pred, colour) -> torch.Tensor:
    """Lab of the hinted colour itself on the image's L (sRGB clips what lies outside its gamut)."""
    ab = torch.tensor(parse_color(colour)).view(1, 2, 1, 1).expand(1, 2, *pred.size)
    return lab_of(join_lab(pred.L, ab))


def ab_error(lab: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return (lab[1:] - want[1:]).norm(dim=0)


@pytest.mark.parametrize("colour", [RED, MUTED])
@pytest.mark.parametrize("decode", ["argmax", "annealed-mean"])
def test_a_full_strength_hint_gives_its_colour_and_keeps_L(colorizer, two_tone, decode, colour):
    pred = colorizer.predict(two_tone)[0]
    mask = np.zeros((120, 160), np.float32)
    mask[:, 80:] = 1  # the right half, on the lighter ground
    out = apply_hints(pred, [Hint.on(mask, colour)])
    lab_in, lab, want = lab_of(pred.rgb(decode)), lab_of(out.rgb(decode)), ideal(pred, colour)
    err = ab_error(lab, want)[:, 100:]  # away from the feather at model resolution
    assert err.mean() < 5 and err.max() < 8  # within one bin of the paper's grid
    assert ab_error(lab_in, want)[:, 100:].mean() > 15  # the model alone did not give that colour
    in_gamut = (want[0] - lab_in[0]).abs() < 0.5  # where the hinted colour fits sRGB on this L
    assert in_gamut[:, 100:].float().mean() > (0.9 if colour == MUTED else 0.0)
    assert (lab[0] - lab_in[0]).abs()[in_gamut].max() < 1.0  # L untouched there (8-bit rounding aside)
    # Outside the region (and its one-cell feather at model resolution) nothing moves.
    assert torch.allclose(lab[:, :, :60], lab_in[:, :, :60], atol=1e-4)


def test_half_strength_lies_between(colorizer, two_tone):
    pred = colorizer.predict(two_tone)[0]
    mask = np.ones((120, 160), np.float32)
    want = torch.tensor(parse_color(RED)).view(2, 1, 1)
    errs = [(lab_of(apply_hints(pred, [Hint.on(mask, RED, s)]).rgb("annealed-mean"))[1:] - want).norm(dim=0).mean()
            for s in (0.0, 0.5, 1.0)]
    assert errs[0] > errs[1] > errs[2]


def test_a_point_grows_into_its_region_and_not_across_an_edge(two_tone):
    from ccc_nodes.core.prediction import lightness

    L = lightness(two_tone[..., None].repeat(3, 2) / 255.0)
    w = grow_point(L, 50, 60)  # the disc's centre
    gh, gw = w.shape
    ys, xs = np.mgrid[:gh, :gw]
    disc = ((ys * 120 / gh - 60) ** 2 + (xs * 160 / gw - 50) ** 2) < 30**2
    ground = ((ys * 120 / gh - 60) ** 2 + (xs * 160 / gw - 50) ** 2) > 40**2
    assert w.numpy()[disc].mean() > 0.8 and w.numpy()[ground].max() < 0.1
    w2 = grow_point(L, 150, 10)  # the ground, around the disc
    assert w2.numpy()[ground].mean() > 0.5 and w2.numpy()[disc].max() < 0.1
    with pytest.raises(HintError, match="outside"):
        grow_point(L, 160, 10)


def test_a_point_takes_the_smallest_mask_under_it(two_tone):
    from ccc_nodes.core.prediction import lightness

    L = lightness(two_tone[..., None].repeat(3, 2) / 255.0)
    big = torch.zeros(60, 80, dtype=torch.bool)
    big[:, :40] = True
    small = torch.zeros(60, 80, dtype=torch.bool)
    small[10:20, 10:20] = True
    masks = MaskSet(torch.stack([big, small]), "given")
    assert torch.equal(grow_point(L, 30, 30, masks=masks), small.float())  # (30, 30) -> mask cell (15, 15)
    assert torch.equal(grow_point(L, 60, 100, masks=masks), big.float())
    assert not torch.equal(grow_point(L, 150, 100, masks=masks), big.float())  # under no mask: affinity


def test_hints_chain_on_disjoint_regions(colorizer, two_tone):
    pred = colorizer.predict(two_tone)[0]
    left, right = np.zeros((120, 160), np.float32), np.zeros((120, 160), np.float32)
    left[:, :60], right[:, 100:] = 1, 1
    out = apply_hints(pred, [Hint.on(left, "#2e86c1"), Hint.on(right, RED)])
    lab = lab_of(out.rgb())
    assert ab_error(lab, ideal(pred, "#2e86c1"))[:, :40].mean() < 5
    assert ab_error(lab, ideal(pred, RED))[:, 120:].mean() < 5


def test_a_reference_palette_pulls_the_whole_image_toward_its_colours(colorizer):
    from skimage import data

    grey = Image.fromarray(data.astronaut()).convert("L").resize((160, 160))
    pred = colorizer.predict(grey)[0]
    green = np.zeros((64, 64, 3), np.uint8)
    green[...] = (40, 160, 60)
    want = torch.tensor(parse_color((40, 160, 60))).view(2, 1, 1)
    dist = [(lab_of(apply_hints(pred, reference=palette_prior(green, pred.classes, s)).rgb("annealed-mean"))[1:]
             - want).norm(dim=0).mean() for s in (0.0, 1.0, 3.0)]
    assert dist[0] > dist[1] > dist[2]
    palette = palette_prior(["#28a03c"], pred.classes)
    assert palette.log_prior.argmax() == palette_prior(green, pred.classes).log_prior.argmax()
    with pytest.raises(HintError, match="classes"):
        apply_hints(pred, reference=GlobalHint(torch.zeros(3)))


def test_a_harmonised_prediction_stays_harmonised(colorizer, two_tone):
    pred = colorizer.predict(two_tone)[0]
    masks = MaskSet(torch.ones(1, 120, 160, dtype=torch.bool), "given")
    h = harmonize(pred, masks, min_area=0.0)
    out = apply_hints(h, [Hint.at(50, 60, RED)])
    assert isinstance(out, HarmonizedPrediction) and out.masks is masks and out.params == h.params
    assert not torch.equal(out.logits, h.logits)


@pytest.mark.slow
def test_the_python_api_takes_hints_and_a_reference(colorizer, two_tone):
    plain = colorizer(Image.fromarray(two_tone))
    hinted = colorizer(Image.fromarray(two_tone), hints=[Hint.at(50, 60, RED)])
    assert plain.size == hinted.size == (160, 120)
    lab = lab_of(torch.from_numpy(np.asarray(hinted) / 255.0).permute(2, 0, 1)[None].float())
    want = ideal(colorizer.predict(two_tone)[0], RED)
    assert ab_error(lab, want)[50:70, 40:60].mean() < 5
    two = colorizer([two_tone, two_tone], hints=[[], [Hint.at(50, 60, RED)]], reference=["#2e86c1"])
    assert not np.array_equal(two[0], two[1])
    with pytest.raises(ValueError, match="2 lists of hints for 1"):
        colorizer([two_tone], hints=[[], []])


def test_hint_text_and_json_forms(tmp_path):
    h = parse_hint("10,20,#c0392b,0.5")
    assert h.point == (10.0, 20.0) and h.strength == 0.5
    for bad in ("10,20", "x,20,#c0392b", "10,20,#c0392b,2"):
        with pytest.raises(HintError):
            parse_hint(bad)
    f = tmp_path / "hints.json"
    f.write_text(json.dumps({"*": ["1,2,#000000"], "a.jpg": [{"x": 3, "y": 4, "color": RED, "strength": 0.25}]}))
    table = load_hints(f)
    assert [x.point for x in hints_for(table, tmp_path / "a.jpg")] == [(3.0, 4.0), (1.0, 2.0)]
    assert [x.point for x in hints_for(table, tmp_path / "b.jpg")] == [(1.0, 2.0)]
    f.write_text(json.dumps([["1,2,#000000"]]))
    with pytest.raises(HintError, match="each hint"):
        load_hints(f)
    f.write_text("{")
    with pytest.raises(HintError, match="not valid JSON"):
        load_hints(f)


# ------------------------------------------------------------------ what a hint may hold (issue 21)
@pytest.mark.parametrize("color", [{"a": float("nan"), "b": 0}, {"a": 1e21, "b": 0}, {"a": 0, "b": float("-inf")},
                                   {"a": 129, "b": 0}, {"a": [1], "b": 0}, {"a": None, "b": 0}, {"a": True, "b": 0},
                                   (float("nan"), 0, 0), ([1], 2, 3)])
def test_a_hint_colour_that_is_no_colour_is_refused_in_words(color):
    """NaN or 1e21 as a*: before, the whole image turned blue-violet and the run said nothing."""
    with pytest.raises(HintError, match=r"a\*|b\*|colour"):
        parse_color(color)
    assert parse_color({"a": -AB_LIMIT, "b": AB_LIMIT}) == (-AB_LIMIT, AB_LIMIT)


def test_every_number_of_a_hint_is_checked_wherever_it_comes_from(two_tone):
    nan = float("nan")
    for make, words in ((lambda: Hint(ab=(nan, 0), point=(1, 1)), "a* nan is not a finite number"),
                        (lambda: Hint(ab=(0, 1e21), point=(1, 1)), "must lie in -128..128"),
                        (lambda: Hint(ab=(0, 0), point=(nan, 1)), "x nan is not a finite number"),
                        (lambda: Hint.at(1, None, RED), "y None is not a number"),
                        (lambda: Hint.at(1, 1, RED, strength=nan), "hint strength nan"),
                        (lambda: Hint.on(np.full((4, 4), nan), RED), "NaN or infinite weights"),
                        (lambda: GlobalHint(torch.zeros(3), nan), "reference strength nan")):
        with pytest.raises(HintError, match=re.escape(words)):
            make()


def test_too_many_hints_for_one_image_are_refused_before_any_work(tmp_path, colorizer, two_tone, capsys):
    """One limit (settings.MAX_HINTS, enforced in hints.py) for every interface: 5,000 hint
    lines held the Space's workers 88 s and 50,000 from the CLI took 3.3 GB."""
    from ccc_nodes.interfaces.cli import main
    from ccc_nodes.steps.hints import hint_regions, parse_hints

    line = "1,1,#c0392b"
    assert len(parse_hints("\n".join([line] * MAX_HINTS))) == MAX_HINTS
    with pytest.raises(HintError, match=f"{MAX_HINTS + 1} colour hints for one image; at most {MAX_HINTS}"):
        parse_hints("\n".join([line] * (MAX_HINTS + 1)))
    with pytest.raises(HintError, match="at most"):  # counted before a line is read: the bad last line is not reached
        parse_hints("\n".join([line] * MAX_HINTS + ["not a hint"]))
    pred = colorizer.predict(two_tone)[0]
    many = [Hint.at(1, 1, RED)] * (MAX_HINTS + 1)
    for call in (lambda: apply_hints(pred, many), lambda: hint_regions(pred, many),
                 lambda: colorizer.run(two_tone, hints=many)):
        with pytest.raises(HintError, match="at most"):
            call()
    f = tmp_path / "hints.json"
    f.write_text(json.dumps([line] * 50_000))
    with pytest.raises(HintError, match=f"every input: 50,000 colour hints for one image; at most {MAX_HINTS}"):
        load_hints(f)
    # An input's own hints and those for every input (the file's "*" and --hint) count together.
    from ccc_nodes.core.settings import MAX_HINTS as SETTING
    from ccc_nodes.steps.hints import hint_table

    assert MAX_HINTS == SETTING  # one home: the settings, plain Python, so `ccc --help` states it without torch
    assert f"at most {MAX_HINTS} hints (`MAX_HINTS`" in (REPO / "README.md").read_text().replace("\n", " ")
    half = MAX_HINTS // 2
    f.write_text(json.dumps({"*": [line] * half, "disc.png": [line] * (MAX_HINTS - half)}))
    assert len(hints_for(hint_table(f), "disc.png")) == MAX_HINTS
    with pytest.raises(HintError, match=re.escape("hints for 'disc.png'")):
        hint_table(f, [line])
    src = tmp_path / "disc.png"
    Image.fromarray(two_tone).save(src)
    f.write_text(json.dumps([line] * 50_000))
    assert main(["colorize", str(src), "-o", str(tmp_path / "out"), "--hints", str(f), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: hints file") and "at most" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def _one_line_refusal(main, capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("hint", "words"), [
    ({"x": [1], "y": 2, "color": RED}, "x [1] is not a number"),
    ({"x": 1, "y": None, "color": RED}, "y None is not a number"),
    ({"x": 1, "y": 2, "color": None}, "colour None"),
    ({"x": 1, "y": 2, "color": [[1], 2, 3]}, "colour channel [1] is not a number"),
    ({"x": 1, "y": 2, "color": RED, "strength": None}, "hint strength None is not a number"),
    ({"x": 1, "y": 2, "color": RED, "strength": [0.5]}, "hint strength [0.5] is not a number"),
    ({"x": "abc", "y": 2, "color": RED}, "x 'abc' is not a number"),
    ({"x": 1, "y": 2, "color": {"a": float("nan"), "b": 0}}, "a* nan is not a finite number"),
    ({"x": 1, "y": 2, "color": {"a": 1e21, "b": 0}}, "must lie in -128..128"),
    ("abc,2,#c0392b", "x 'abc' is not a number"),
    ({"x": 1, "y": 2, "color": RED, "strenght": 0}, "unknown key 'strenght' (x, y, color, strength)"),
])
def test_a_bad_field_in_hints_json_is_one_line_naming_the_file_and_the_hint(tmp_path, capsys, hint, words):
    """Lists, null, text and NaN in a --hints file: before, a TypeError traceback, or
    'could not convert string to float' naming neither the file nor the hint."""
    from ccc_nodes.interfaces.cli import main

    src = tmp_path / "disc.png"
    Image.new("L", (40, 30), 120).save(src)
    f = tmp_path / "hints.json"
    f.write_text(json.dumps({"disc.png": ["1,1,#000000", hint]}))  # NaN as JSON's NaN, as Python writes it
    err = _one_line_refusal(main, capsys, ["colorize", str(src), "-o", str(tmp_path / "out"), "--hints", str(f)])
    assert words in err and f"hints file {f}, 'disc.png', hint 2" in err, err
    assert not (tmp_path / "out").exists()


def test_a_hints_file_nested_past_the_parsers_depth_is_one_line(tmp_path, capsys):
    from ccc_nodes.interfaces.cli import main

    src = tmp_path / "disc.png"
    Image.new("L", (40, 30), 120).save(src)
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    err = _one_line_refusal(main, capsys, ["colorize", str(src), "-o", str(tmp_path / "out"), "--hints", str(f)])
    assert "nested too deeply" in err
    err = _one_line_refusal(main, capsys, ["colorize", str(src), "-o", str(tmp_path / "out"), "--hint", "1,1,red"])
    assert "hint '1,1,red': colour 'red'" in err  # the hint named, not only its colour


def test_hints_under_a_name_no_input_matches_are_reported(tmp_path, model_dir, capsys, monkeypatch):
    """Before, hints for 'IMG_0001.jpg' when the input is 'img_0001.jpg' were dropped in
    silence; now one warning line names them, and the run goes on (one file may serve runs
    on parts of a collection)."""
    from ccc_nodes.interfaces.cli import main

    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (40, 30), 120).save(tmp_path / "in" / name)
    f = tmp_path / "hints.json"
    f.write_text(json.dumps({"a.png": ["1,1,#c0392b"], "in/b.png": ["2,2,#2e86c1"], "A.PNG": ["3,3,#000000"],
                             "elsewhere/c.png": ["4,4,#000000"], "*": ["5,5,#000000"]}))
    monkeypatch.chdir(tmp_path)  # the inputs as given: in/a.png, in/b.png
    rc = main(["colorize", "in", "-o", str(tmp_path / "out"), "--hints", str(f), "--model",
               str(model_dir), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: {f} names 2 files that no input matches, whose hints are not used: 'A.PNG', "
                       "'elsewhere/c.png'"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    from ccc_nodes.steps.hints import hint_table, unmatched_names  # the core's rule the CLI reads

    inputs = [tmp_path / "in" / "a.png", Path("in/b.png")]
    assert unmatched_names(hint_table(f), inputs) == ["A.PNG", "elsewhere/c.png"]


def test_hints_filed_under_a_path_written_another_way_reach_the_input(tmp_path, monkeypatch):
    """Keys as a shell gives paths: ./in/x.png, an absolute path, a folder with its trailing
    slash. Before, each was 'no input matches' and its hints were not used."""
    from ccc_nodes.steps.hints import hint_table, hints_for, unmatched_names

    (tmp_path / "in" / "frames").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "hints.json"
    keys = {"./in/a.png": "1,1,#c0392b", str(tmp_path / "in" / "b.png"): "2,2,#2e86c1", "in/frames/": "3,3,#000000",
            "~/nowhere/c.png": "4,4,#000000"}
    f.write_text(json.dumps({k: [v] for k, v in keys.items()}))
    table = hint_table(f)
    inputs = [Path("in/a.png"), Path("./in/b.png"), Path("in/frames")]
    assert [hints_for(table, p)[0].point for p in inputs] == [(1, 1), (2, 2), (3, 3)]
    assert hints_for(table, tmp_path / "in" / "a.png")[0].point == (1, 1)  # the same file, given in full
    assert unmatched_names(table, inputs) == ["~/nowhere/c.png"]  # named as the file writes it


def ccc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ccc_nodes.interfaces.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.slow
def test_cli_hints_colour_the_region_and_bad_hints_fail_in_one_line(tmp_path, two_tone):
    src = tmp_path / "disc.png"
    Image.fromarray(two_tone).save(src)
    r = ccc("colorize", src, "-o", tmp_path / "out", "--hint", f"50,60,{RED}", "-q")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "disc.png")) / 255.0
    lab = lab_of(torch.from_numpy(out).permute(2, 0, 1)[None].float())
    want = ideal(Colorizer(device="cpu").predict(two_tone)[0], RED)
    assert ab_error(lab, want)[50:70, 40:60].mean() < 5
    (tmp_path / "h.json").write_text(json.dumps({"disc.png": [f"140,10,{RED}"]}))
    r = ccc("colorize", src, "-o", tmp_path / "out2", "--hints", tmp_path / "h.json", "--reference", "#2e86c1", "-q")
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "out2" / "disc.png")), (out * 255).round())
    for args, msg in ((["--hint", "50,60,red"], "give #RRGGBB"), (["--hints", tmp_path / "none.json"], "cannot read"),
                      (["--reference", "nothing.jpg"], "neither an image")):
        r = ccc("colorize", src, "-o", tmp_path / "bad", *args, "-q")
        assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    r = ccc("colorize", src, "-o", tmp_path / "far", "--hint", f"500,60,{RED}", "-q")
    assert r.returncode == 1 and "outside the 160x120 image" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_colour_hint_and_reference_palette_nodes_chain_over_a_batch(colorizer, two_tone):
    from ccc_nodes.interfaces.nodes import NODE_CLASS_MAPPINGS as N
    from ccc_nodes.interfaces.nodes import ClassBatch

    image = torch.from_numpy(np.stack([two_tone, two_tone[:, ::-1]])[..., None].repeat(3, -1) / 255.0).float()
    classes = N["CCCGrayscaleToClasses"]().predict(colorizer, image, 224)[0]
    mask = torch.zeros(1, 120, 160)
    mask[0, :, 100:] = 1  # one mask for both images
    hinted, region = N["CCCColorHint"]().hint(classes, RED, 1.0, mask=mask)
    assert isinstance(hinted, ClassBatch) and len(hinted) == 2 and region.shape == (2, 120, 160)
    hinted, region = N["CCCColorHint"]().hint(hinted, "#2e86c1", 1.0, x=50, y=60)  # chains; a point this time
    assert region[0, 60, 50] > 0.9 and region[0, 60, 140] < 0.1  # the disc of image 1
    assert region[1, 5, 5] > 0.5 and region[1, 60, 109] < 0.1  # image 2 is mirrored: (50, 60) is the ground
    steered = N["CCCReferencePalette"]().steer(hinted, image[:1], 0.5)[0]
    rgb, _ = N["CCCClassesToLab"]().decode(steered, "argmax", 0.38)
    lab = rgb_to_lab(rgb.permute(0, 3, 1, 2))
    # Image 1: the mask's red on the right, the point's blue on the disc, through the palette.
    assert ab_error(lab[0], ideal(classes.predictions[0], RED))[:, 120:].mean() < 5
    assert ab_error(lab[0], ideal(classes.predictions[0], "#2e86c1"))[50:70, 40:60].mean() < 5
    # After SAM Harmonize (here with given masks), a point grows into the smallest mask holding it.
    masks = torch.zeros(2, 120, 160)
    masks[0, :, :80], masks[1, 40:80, 30:70] = 1, 1
    one = N["CCCGrayscaleToClasses"]().predict(colorizer, image[:1], 224)[0]  # one image takes all the masks
    harmonized, _ = N["CCCSAMHarmonize"]().harmonize(one, 0.0, 0.3, 12.0, 1.0, mask=masks)
    _, region = N["CCCColorHint"]().hint(harmonized, RED, 1.0, x=50, y=60)
    assert torch.equal(region[0] > 0.5, masks[1] > 0.5)
    assert N["CCCColorHint"].VALIDATE_INPUTS(color="#c0392b") is True  # a typo is refused before the run
    assert "give #RRGGBB" in N["CCCColorHint"].VALIDATE_INPUTS(color="red")
    with pytest.raises(ValueError, match="mask or a point"):
        N["CCCColorHint"]().hint(classes, RED, 1.0)
    with pytest.raises(ValueError, match="3 given for 2 images"):
        N["CCCColorHint"]().hint(classes, RED, 1.0, mask=torch.ones(3, 120, 160))


def test_colour_hint_stretches_a_mask_of_another_shape_as_comfyuis_nodes_do(colorizer, two_tone):
    from ccc_nodes.interfaces.nodes import NODE_CLASS_MAPPINGS as N

    image = torch.from_numpy(two_tone[None, ..., None].repeat(3, -1) / 255.0).float()  # 160 x 120
    classes = N["CCCGrayscaleToClasses"]().predict(colorizer, image, 64)[0]
    square = torch.zeros(1, 512, 512)  # a SolidMask-like square, its right half painted
    square[0, :, 256:] = 1
    hinted, region = N["CCCColorHint"]().hint(classes, RED, 1.0, mask=square)
    assert region.shape == (1, 120, 160)
    assert region[0, :, 85:].min() > 0.99 and region[0, :, :75].max() < 0.01  # the right half of the photo
    rgb, _ = N["CCCClassesToLab"]().decode(hinted, "argmax", 0.38)
    error = ab_error(rgb_to_lab(rgb.permute(0, 3, 1, 2))[0], ideal(classes.predictions[0], RED))
    assert error[:, 100:].mean() < 5 < error[:, :60].mean()


def test_hint_nodes_run_in_the_server_with_a_painted_mask_and_a_batch(tmp_path_factory, small_model):
    import io

    import httpx
    from helpers import grey_png, run_prompt, upload

    from ccc_nodes.interfaces.server import ServerConfig, ServerThread

    base = tmp_path_factory.mktemp("hint_server")
    small_model.save_pretrained(base / "models" / "ccc" / "small")
    with ServerThread(ServerConfig(base_dir=base / "work", models_dir=base / "models")) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        # An RGBA photo whose transparent right half is the painted region (MASK = 1 - alpha).
        grey = Image.open(io.BytesIO(grey_png(h=48, w=64))).convert("L")
        alpha = np.full((48, 64), 255, np.uint8)
        alpha[:, 32:] = 0
        rgba = Image.merge("RGBA", (grey, grey, grey, Image.fromarray(alpha)))
        buf = io.BytesIO()
        rgba.save(buf, format="PNG")
        name = upload(c, buf.getvalue(), "painted.png", overwrite="true").json()["name"]
        batch = upload(c, grey_png(frames=3, fmt="TIFF"), "three.tif", overwrite="true").json()["name"]
        g = {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "CCCModelLoader", "inputs": {"model": "small", "device": "cpu", "precision": "fp32"}},
            "3": {"class_type": "CCCGrayscaleToClasses", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "size": 64}},
            "4": {"class_type": "CCCColorHint", "inputs": {"classes": ["3", 0], "color": RED, "strength": 1.0,
                                                           "mask": ["1", 1]}},
            "5": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["4", 0], "decode": "argmax", "temperature": 0.38}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "hinted"}},
            "7": {"class_type": "LoadImage", "inputs": {"image": batch}},
            "8": {"class_type": "CCCGrayscaleToClasses", "inputs": {"ccc_model": ["2", 0], "image": ["7", 0], "size": 64}},
            "9": {"class_type": "CCCColorHint", "inputs": {"classes": ["8", 0], "color": "#2e86c1", "strength": 1.0,
                                                           "x": 10, "y": 10}},
            "10": {"class_type": "CCCReferencePalette", "inputs": {"classes": ["9", 0], "reference": ["1", 0],
                                                                   "strength": 1.0}},
            "11": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["10", 0], "decode": "argmax",
                                                               "temperature": 0.38}},
            "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "batch"}},
        }
        _, _, entry = run_prompt(srv, c, g)
        assert entry["status"]["status_str"] == "success", entry["status"]
        out = np.asarray(Image.open(io.BytesIO(c.get("/view", params=entry["outputs"]["6"]["images"][0]).content)))
        lab = lab_of(torch.from_numpy(out / 255.0).permute(2, 0, 1)[None].float())
        from ccc_nodes.core.prediction import lightness

        L = lightness(np.asarray(grey.convert("RGB")) / 255.0)
        want = lab_of(join_lab(L, torch.tensor(parse_color(RED)).view(1, 2, 1, 1).expand(1, 2, 48, 64)))
        nearest = small_model.classes.centers[torch.cdist(torch.tensor([parse_color(RED)]),
                                                          small_model.classes.centers).argmin()]
        assert ab_error(lab, want)[:, 44:].mean() < float((nearest - torch.tensor(parse_color(RED))).norm()) + 3
        assert ab_error(lab, want)[:, :20].mean() > 15  # the opaque half keeps the model's colours
        assert len(entry["outputs"]["12"]["images"]) == 3
        # A blank mask (a photo without alpha) is refused in words, not ignored.
        g4 = {k: g[k] for k in ("2", "7", "8")} | {
            "4": {"class_type": "CCCColorHint", "inputs": {"classes": ["8", 0], "color": RED, "strength": 1.0,
                                                           "mask": ["7", 1]}},
            "5": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["4", 0], "decode": "argmax", "temperature": 0.38}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "blank"}},
        }
        _, _, entry = run_prompt(srv, c, g4)
        assert entry["status"]["status_str"] == "error"
        assert "the mask is empty" in json.dumps(entry["status"]["messages"])


def test_sampled_hints_take_the_ground_truths_colour():
    from ccc_nodes.job.hint_eval import sample_hints

    gt = torch.zeros(3, 64, 64)
    gt[0, :, :32], gt[2, :, 32:] = 0.8, 0.8  # red left half, blue right half
    hints = sample_hints(gt, 6, np.random.default_rng(0))
    lab = rgb_to_lab(gt[None])[0]
    for h in hints:
        x, y = int(h.point[0]), int(h.point[1])
        if abs(x - 32) > 3:  # the patch lies in one half
            assert np.allclose(h.ab, lab[1:, y, x], atol=1e-3)
    again = sample_hints(gt, 6, np.random.default_rng(0))
    assert [h.point for h in again] == [h.point for h in hints]  # seeded


@pytest.mark.slow
def test_evaluate_hint_points_scores_and_reports(tmp_path):
    from skimage import data

    gt = tmp_path / "gt"
    gt.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).save(gt / f"{name}.png")
    (gt / "notes.txt").write_text("not a photo")
    r = ccc("evaluate", "--gt", gt, "--model", "default", "--hint-points", "0,3", "--out", tmp_path / "ev",
            "--gallery", "1", "-q", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "ev" / "hints.json").read_text())["rows"]
    assert set(rows) == {"0", "3"} and rows["0"]["images"] == rows["3"]["images"] == 2
    # no hints, no hinted region: n/a, written null (JSON has no NaN), as metrics.json writes it
    assert rows["0"]["delta_e"] is None and rows["3"]["delta_e"] < 10  # the hinted colour, in its region
    assert rows["3"]["psnr"] > rows["0"]["psnr"] and rows["0"]["delta_l"] < 0.5
    for f in ("hints.md", "hints_psnr.png", "hints_gallery.png"):
        assert (tmp_path / "ev" / f).is_file()
    assert Image.open(tmp_path / "ev" / "hints_gallery.png").size[0] == 4 * 192
    for args, msg in ((["--hint-points", "0,x"], "counts >= 0"), (["--hint-points", "-1"], "counts >= 0"),
                      (["--hint-points", "0,101"], "at most 100 hints")):
        r = ccc("evaluate", "--gt", gt, "--model", "default", *args, "--out", tmp_path / "bad", "-q")
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    r = ccc("evaluate", "--gt", gt, "--pred", gt, "--hint-points", "1", "--out", tmp_path / "bad", "-q")
    assert r.returncode == 2 and "needs --model" in r.stderr
