"""Training package: data sources, class statistics, config files, export, a full run."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, env, image_tree, python, tar_shards

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.modeling import CCCNet
from training.checkpoint import CheckpointError, atomic_save, load_checkpoint
from training.data import (
    CORRUPT,
    GREY,
    OK,
    EpochSampler,
    ImageDataset,
    IndexedImageDataset,
    collate,
    list_sources,
    load_images,
    make_loader,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return image_tree(tmp_path_factory.mktemp("tree"))


def test_sources_folder_list_and_shards_agree(tmp_path, tree):
    folder = list_sources(tree)
    assert len(folder) == 18 and all(Path(s.path).parent.name.startswith("class_") for s in folder)

    lst = tmp_path / "files.txt"
    lst.write_text("# relative to the list\n" + "\n".join(str(Path(s.path).relative_to(tmp_path.parent)) for s in folder[:5]))
    lst_rel = tmp_path.parent / "files.txt"
    lst_rel.write_text(lst.read_text())
    assert [s.path for s in list_sources(lst_rel)] == [s.path for s in folder[:5]]

    shards = tar_shards(tmp_path / "shards", n=12, shards=3)
    by_glob = list_sources(str(tmp_path / "shards" / "train-*.tar"))
    by_range = list_sources(str(tmp_path / "shards" / "train-{000..002}.tar"))
    assert by_glob == by_range and len(by_glob) == 12  # the .cls members are not images
    assert {s.path for s in by_glob} == {str(p) for p in shards}
    # random access into a shard reads exactly the member's bytes
    import tarfile

    src = next(s for s in by_glob if s.path == str(shards[1]))
    with tarfile.open(shards[1]) as tar:
        assert src.member.endswith(".jpg") and src.read() == tar.extractfile(src.member).read()

    with pytest.raises(FileNotFoundError, match="matches no files"):
        list_sources(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_sources(tmp_path / "missing")


def test_corrupt_and_grey_images_are_counted_not_fatal(tree):
    sources = list_sources(tree)
    images, names, skipped = load_images(sources, size=48, workers=2, progress=False)
    assert images.shape == (16, 3, 48, 48) and images.dtype == torch.uint8
    assert skipped == {"corrupt": 1, "grey": 1}
    assert not any("broken" in n or "grey" in n for n in names)

    ds = ImageDataset(sources, size=48)
    statuses = [ds[i][1] for i in range(len(ds))]
    assert statuses.count(CORRUPT) == 1 and statuses.count(GREY) == 1 and statuses.count(OK) == 16
    batch, corrupt, grey = collate([IndexedImageDataset(sources, size=48)[i] for i in range(len(ds))])
    assert batch.shape[0] == 16
    assert [sources[i].name for i in corrupt] == [s.name for s in sources if "broken" in s.name]
    assert [sources[i].name for i in grey] == [s.name for s in sources if "grey" in s.name]

    # streaming through worker processes gives the same pixels as the in-memory path
    loader = make_loader(sources, 48, batch=5, workers=2)
    streamed = torch.cat([x for x, _, _ in loader])
    assert torch.equal(streamed, images)


def test_epoch_sampler_is_a_permutation_per_epoch_and_resumes_anywhere():
    s = EpochSampler(10, batch=3, seed=4)
    it = iter(s)
    first = [next(it) for _ in range(9)]  # 3 epochs of 3 batches (one image dropped per epoch)
    for e in range(3):
        flat = [i for batch in first[3 * e : 3 * e + 3] for i in batch]
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert first[0:3] != first[3:6]  # a fresh order every epoch
    resumed = iter(EpochSampler(10, batch=3, seed=4, start=4))
    assert [next(resumed) for _ in range(5)] == first[4:9]
    assert [next(iter(EpochSampler(10, 3, seed=5)))] != first[:1]
    on_device = EpochSampler(10, batch=3, seed=4, start=4).on("cpu")  # index tensors for images held on a device
    assert [next(on_device).tolist() for _ in range(5)] == first[4:9]


@pytest.mark.slow
def test_class_statistics_command(tmp_path, tree):
    from training.stats import main

    out, plot = tmp_path / "classes.json", tmp_path / "classes.png"
    assert main([str(tree), "--bin-size", "6", "--min-fraction", "0.002", "--out", str(out), "--plot", str(plot),
                 "--workers", "2"]) == 0
    cfg = json.loads(out.read_text())
    counts = torch.tensor(cfg["counts"])
    assert cfg["images"] == 16 and cfg["corrupt"] == 1 and cfg["grey"] == 1
    assert counts.numel() == 1296 and cfg["samples"] == int(counts.sum()) == 16 * 56 * 56  # METHOD.md s. 4
    expected = ColorClasses.from_histogram(counts, 6, 0.002)
    assert cfg["kept"] == expected.kept.tolist() and cfg["K"] == expected.K < 1296
    assert min(counts[cfg["kept"]]) >= 0.002 * cfg["samples"]
    # a model config takes the file as it is
    assert CCCNet(encoder="mobilenetv3_small_050", decoder_channels=(8, 8, 8), **{k: cfg[k] for k in ("bin_size", "kept")}).num_classes == cfg["K"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    with pytest.raises(SystemExit):
        main([str(tree), "--bin-size", "3", "--out", str(out)])


def test_config_file_with_command_line_overrides(tmp_path, capsys):
    from training.train import parse_args

    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: imgs\nout: runs/x\nbin-size: 8\np: 4\nrebalance: cic\ndecoder_channels: [64, 32, 32]\nsteps: 10\n"
                   "lr: 5e-4\n")  # YAML 1.1 reads 5e-4 as a string: converted by the option's type
    a = parse_args(["--config", str(cfg), "--p", "16"])
    assert (a.data, a.bin_size, a.p, a.rebalance, a.decoder_channels, a.steps) == ("imgs", 8, 16.0, "cic", "64,32,32", 10)
    assert a.lr == 5e-4 and isinstance(a.lr, float)
    assert (a.batch, a.betas, a.precision) == (64, "0.5,0.999", "auto")  # paper defaults
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"data": "d", "out": "o", "time_budget": 5, "compile": True}))
    a = parse_args(["--config", str(js)])
    assert a.time_budget == 5 and a.compile is True and a.steps == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: d\nout: o\nsteps: 1\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--config", str(bad)])
    assert exited.value.code == 2 and "unknown option 'learning_rate'" in capsys.readouterr().err
    bad.write_text("data: d\nout: o\nsteps: 1\nrebalance: sometimes\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--config", str(bad)])
    assert exited.value.code == 2 and "rebalance must be one of ccc, none, cic" in capsys.readouterr().err
    for c in ("paper", "cpu-small"):  # the shipped configs parse
        cfg_file = Path(__file__).resolve().parents[1] / "training" / "configs" / f"{c}.yaml"
        assert parse_args(["--config", str(cfg_file), "--data", "d", "--out", "o"]).steps > 0


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise pickle.PicklingError("crash in the middle of writing")

    with pytest.raises(pickle.PicklingError):
        atomic_save({"step": 2, "w": torch.zeros(10_000), "boom": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind
    path.write_bytes(b"half a file")
    with pytest.raises(CheckpointError, match="delete it to start afresh"):
        load_checkpoint(path)


@pytest.mark.slow
def test_train_evaluate_and_export_end_to_end(tmp_path, tree):
    """A whole run in process: classes file, streaming data, periodic eval and samples in
    TensorBoard, checkpoint, model folder with card, reload, evaluate command."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ccc_nodes.core.hub import load_model
    from training import evaluate, stats, train

    classes = tmp_path / "classes.json"
    stats.main([str(tree), "--min-fraction", "0.002", "--out", str(classes), "--workers", "0"])
    out = tmp_path / "run"
    args = [*TINY, "--data", str(tree), "--val", str(tree / "class_1"), "--out", str(out), "--steps", "4",
            "--data-mode", "stream", "--workers", "1", "--classes", str(classes), "--tensorboard",
            "--eval-every", "2", "--eval-images", "4", "--sample-every", "2", "--rebalance", "cic"]
    assert train.main(args) == 0
    r = json.loads((out / "training.json").read_text())
    kept = json.loads(classes.read_text())["kept"]
    assert r["steps"] == 4 and r["K"] == len(kept) and r["data_mode"] == "stream"
    assert r["skipped_detail"]["corrupt"] + r["skipped_detail"]["grey"] >= 1  # the bad files were met and skipped
    assert {"tar", "cnr", "ccar", "cf", "psnr", "dev_mean", "dev_max"} <= set(r["val"]) and r["val"]["images"] == 8
    assert r["val"]["dev_max"] >= r["val"]["dev_mean"] > 0
    assert [s for s, _ in r["loss_curve"]] == [1, 2, 3, 4]
    card = (out / "README.md").read_text()
    assert "cic" in card and "TAR" in card and r["command"] in card

    model = load_model(str(out))
    assert model.classes.kept.tolist() == kept
    ev = EventAccumulator(str(out / "tb")).Reload()
    tags = ev.Tags()
    assert {"train/loss", "train/weight_min", "train/weight_max", "train/img_per_s", "val/tar", "val/ccar"} <= set(tags["scalars"])
    assert len(ev.Scalars("val/tar")) == 3  # steps 2, 4 and the final evaluation
    assert "samples/grey-prediction-truth" in tags["images"]
    assert (out / "checkpoint.pt").is_file()

    figures = tmp_path / "val.json"
    assert evaluate.main([str(out), "--val", str(tree / "class_1"), "--size", "64", "--store-size", "72",
                          "--workers", "0", "--json", str(figures)]) == 0
    assert json.loads(figures.read_text())["tar"] == pytest.approx(r["val"]["tar"], abs=1e-3)


def test_a_run_fine_tunes_a_model_folder_and_refuses_another_model(tmp_path, tree, capsys):
    """--init FOLDER starts from every weight of a finished run (with its classes)."""
    from safetensors.torch import load_file

    from training import train

    first = tmp_path / "first"
    base = [*TINY, "--data", str(tree), "--steps", "1", "--data-mode", "memory", "--workers", "0", "--ema", "0"]
    assert train.main([*base, "--out", str(first)]) == 0
    tuned = tmp_path / "tuned"
    assert train.main([*base, "--out", str(tuned), "--init", str(first), "--classes", str(first / "config.json"),
                       "--lr", "1e-9", "--warmup", "0"]) == 0
    assert "every weight of the CCC++ model" in capsys.readouterr().out
    a, b = load_file(str(first / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    assert a.keys() == b.keys()
    head = "decoder.head.weight"
    assert torch.allclose(a[head], b[head], atol=1e-5)  # started from the first run's decoder, not a fresh one
    wider = [*base[:3], "32,16,16", *base[4:]]  # another decoder width: not this run's model
    assert train.main([*wider, "--out", str(tmp_path / "x"), "--init", str(first), "--classes",
                       str(first / "config.json")]) == 2
    assert "is another model (decoder widths [16, 16, 16] there, [32, 16, 16] here)" in capsys.readouterr().err


@pytest.mark.slow
def test_push_to_hub_reports_a_clear_error_when_the_hub_is_unreachable(tmp_path):
    """Real huggingface_hub code up to the network: a closed loopback port stands for no network."""
    model = CCCNet(encoder="mobilenetv3_small_050", decoder_channels=(8, 8, 8), kept=[1, 2, 3])
    model.save_pretrained(tmp_path / "m")
    e = env()
    e.update(HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_not_a_real_token", HF_HUB_ETAG_TIMEOUT="2",
             HF_HUB_DOWNLOAD_TIMEOUT="2")
    res = subprocess.run([python(), "-m", "training.export", str(tmp_path / "m"), "--push-to-hub", "someone/ccc-test"],
                         env=e, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "could not upload" in res.stderr and "someone/ccc-test" in res.stderr and "--push-to-hub" in res.stderr

    from training.export import HubUploadError, push_to_hub

    with pytest.raises(HubUploadError, match="not a saved model"):
        push_to_hub(tmp_path, "someone/x")


def test_images_from_numpy_are_never_mutated():
    # decode returns writable arrays owned by the caller (torch.from_numpy shares memory)
    from helpers import crops, jpeg

    from training.data import decode

    arr, status = decode(jpeg(crops(1)[0]), 32)
    assert status == OK and arr.flags.writeable and arr.shape == (32, 32, 3) and arr.dtype == np.uint8


def test_learning_rate_schedules():
    from training.train import lr_at

    assert lr_at(0, 0.0, 1e-3, 10) == pytest.approx(1e-4)  # warm-up
    assert lr_at(50, 0.5, 1e-3, 10) == pytest.approx(5e-4)  # cosine half-way
    assert lr_at(99, 1.0, 1e-3, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(99, 1.0, 1e-3, 10, "constant") == pytest.approx(1e-3)


def test_weight_average_is_on_by_default_and_warms_up():
    from training.train import EMA_DECAY, build_parser, weight_average

    assert build_parser().parse_args(["--data", "x", "--out", "y"]).ema == EMA_DECAY == 0.999
    assert weight_average(torch.nn.Linear(2, 2), 0) is None
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = weight_average(net, EMA_DECAY)
    assert ema.get_decay(1) == 0.0  # the first update copies the weights
    assert ema.get_decay(201) == pytest.approx(1 - 201 ** -0.75)  # 0.981: a 200-step run averages its end
    assert ema.get_decay(10**6) == EMA_DECAY
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(8, 2))  # BatchNorm running statistics move too
    ema.update(net, step=201)
    d = ema.get_decay(201)
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * net[0].weight)
    assert torch.allclose(ema.module[1].running_mean, (1 - d) * net[1].running_mean)


def test_reference_check_rule():
    # The bar: at least the reference's CF, CNR and CCAR; PSNR within 1 dB; TAR free.
    from training.recipes.reference_check import REFERENCE, verdict

    ref = REFERENCE["ccc"]

    def run(**changes):
        return {"args": {"rebalance": "ccc"}, "val": {**{k: ref[k] for k in ("cf", "tar", "cnr", "ccar", "psnr")}, **changes}}

    assert verdict(run()) == (True, [])
    assert verdict(run(tar=0.1, psnr=ref["psnr"] - 0.9)) == (True, [])
    assert verdict(run(psnr=ref["psnr"] - 1.1)) == (False, ["psnr"])
    assert verdict(run(ccar=ref["ccar"] - 0.1, cnr=ref["cnr"] - 0.01)) == (False, ["cnr", "ccar"])


def _train_cli(args, capsys):
    from training import train

    try:
        rc = train.main([str(a) for a in args])
    except SystemExit as e:  # argparse's own exit for option errors
        rc = e.code
    return rc, capsys.readouterr()


@pytest.mark.parametrize("bad, says", [
    (["--betas", "0.5"], "--betas takes two numbers"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--size", "0"], "--size must be a positive multiple of 32"),
    (["--decoder-channels", "256,128"], "--decoder-channels takes three widths"),
    (["--init", "imagenet", "--encoder", "densenet121"], "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 only"),
    (["--ema", "1"], "--ema must be in [0, 1)"),
    (["--classes", "clases.json"], "--classes 'clases.json'"),
    (["--encoder", "densenet12"], "not a timm model name"),
    (["--bin-size", "3"], "--bin-size"),
])
def test_bad_options_are_one_line_errors_before_any_work(tree, tmp_path, capsys, bad, says):
    rc, out = _train_cli([*TINY, "--data", tree, "--out", tmp_path / "o", "--steps", "2", *bad], capsys)
    assert rc == 2 and says in out.err and "Traceback" not in out.err
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.slow
def test_data_problems_are_one_line_errors(tree, tmp_path, capsys):
    base = [*TINY, "--out", tmp_path / "o", "--steps", "2", "--workers", "0"]
    rc, out = _train_cli([*base, "--data", tmp_path / "nope"], capsys)
    assert rc == 2 and out.err.startswith("error: ") and "nope" in out.err
    rc, out = _train_cli([*base, "--data", tree, "--val", tmp_path / "empty-val", "--out", tmp_path / "o2"], capsys)
    assert rc == 2 and "empty-val" in out.err
    (tmp_path / "empty-val").mkdir()
    rc, out = _train_cli([*base, "--data", tree, "--val", tmp_path / "empty-val", "--out", tmp_path / "o3"], capsys)
    assert rc == 2 and "no images found" in out.err
    bad = tmp_path / "corrupt"
    bad.mkdir()
    for i in range(6):
        (bad / f"{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rc, out = _train_cli([*base, "--data", bad, "--out", tmp_path / "o4", "--data-mode", "memory"], capsys)
    assert rc == 2 and "no usable colour images" in out.err
    # streaming only finds out batch by batch: it stops instead of drawing forever
    rc, out = _train_cli([*base, "--data", bad, "--out", tmp_path / "o5", "--data-mode", "stream", "--classes", "all"],
                         capsys)
    assert rc == 2 and "held no usable image" in out.err and "6 corrupt" in out.err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("steps: [1, 2\n")
    rc, out = _train_cli(["--config", cfg, "--data", tree, "--out", tmp_path / "o6"], capsys)
    assert rc == 2 and "not valid YAML" in out.err


def test_missing_shards_and_listed_files_are_errors(tmp_path):
    paths = tar_shards(tmp_path / "shards", n=6, shards=2)
    assert len(list_sources(str(tmp_path / "shards" / "train-{000..001}.tar"))) == 6
    with pytest.raises(FileNotFoundError, match=r"1 of 3 named files do not exist .*train-002\.tar"):
        list_sources(str(tmp_path / "shards" / "train-{000..002}.tar"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{paths[0]}\nmissing.jpg\n")
    with pytest.raises(FileNotFoundError, match="1 of 2 listed files do not exist"):
        list_sources(listing)
