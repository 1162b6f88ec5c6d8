import json

import pytest
import torch
from helpers import make_model

from ccc_nodes.core.modeling import CCCNet, Decoder, SkipDecoder


@pytest.mark.slow
def test_paper_configuration_shape_and_size():
    model = CCCNet(encoder="densenet121", kept=list(range(532)))  # K = 532 as on Places365
    assert model.encoder.num_features == 1024
    n = sum(p.numel() for p in model.parameters())
    assert 23.4e6 < n < 24.0e6  # "about 23.7M parameters"
    with torch.no_grad():
        feats = model.encoder.forward_features(torch.zeros(1, 1, 224, 224))
        out = model(torch.full((1, 1, 224, 224), 50.0))
    assert feats.shape == (1, 1024, 7, 7)
    assert out.shape == (1, 532, 56, 56)


@pytest.mark.slow
def test_fully_convolutional_any_multiple_of_32(small_model):
    with torch.no_grad():
        out = small_model(torch.rand(2, 1, 256, 320) * 100)
    assert out.shape == (2, small_model.num_classes, 64, 80)


def test_input_checks(small_model):
    with pytest.raises(ValueError, match="multiple of 32"):
        small_model(torch.rand(1, 1, 100, 100))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        small_model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown encoder"):
        CCCNet(encoder="no_such_backbone")


def test_save_and_load_round_trip(tmp_path, small_model):
    small_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kept"] == small_model.classes.kept.tolist()
    assert config["encoder"] == small_model.encoder_name
    loaded = CCCNet.from_pretrained(str(tmp_path)).eval()
    assert loaded.classes == small_model.classes
    x = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        assert torch.allclose(loaded(x), small_model(x), atol=1e-5)


@pytest.mark.slow
def test_half_precision_weights_load_into_float32(tmp_path):
    model = make_model(kept=[1, 2, 666])
    half = make_model(kept=[1, 2, 666]).half()
    half.load_state_dict(model.state_dict())
    half.save_pretrained(tmp_path)
    loaded = CCCNet.from_pretrained(str(tmp_path))
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        assert (loaded.eval()(x) - model(x)).abs().max() < 0.05


@pytest.mark.slow
def test_skip_decoder_reads_strides_16_8_4_from_feature_info():
    model = make_model(kept=list(range(40)))  # Table IV
    skip = CCCNet(encoder="mobilenetv3_small_050", decoder_channels=(32, 16, 16), kept=list(range(40)),
                  decoder="skip").eval()
    reductions = skip.encoder.feature_info.reduction()
    assert [reductions[i] for i in skip.levels] == [4, 8, 16, 32]
    x = torch.rand(2, 1, 128, 192) * 100
    with torch.no_grad():
        assert skip(x).shape == model(x).shape == (2, 40, 32, 48)
    # a change of the input inside one stride-32 cell reaches the output only there:
    # the skips carry it at 1/4, not as a painted 8x8 block
    with torch.no_grad():
        a = skip(x[:1])
        y = x[:1].clone()
        y[..., 64:68, 64:68] = 100 - y[..., 64:68, 64:68]
        d = (skip(y) - a).abs().amax(1)[0]
    assert d[16, 16] > 0 and d[16, 16] > 3 * d[8, 8]


@pytest.mark.slow
def test_config_says_which_decoder_and_old_configs_load_as_table4(tmp_path):
    skip = CCCNet(encoder="mobilenetv3_small_050", decoder_channels=(16, 16, 16), kept=[1, 2, 3], decoder="skip")
    skip.save_pretrained(tmp_path / "skip")
    assert json.loads((tmp_path / "skip" / "config.json").read_text())["decoder"] == "skip"
    loaded = CCCNet.from_pretrained(str(tmp_path / "skip")).eval()
    assert loaded.decoder_name == "skip"
    x = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        assert torch.equal(loaded(x), skip.eval()(x))
    old = make_model(kept=[1, 2, 3])
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config.pop("decoder") == "table4"
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))  # as written before the key existed
    assert CCCNet.from_pretrained(str(tmp_path / "old")).decoder_name == "table4"
    with pytest.raises(ValueError, match="decoder must be one of table4, skip"):
        CCCNet(encoder="mobilenetv3_small_050", decoder="unet")


def test_embedded_default_model_loads_unchanged():
    from ccc_nodes.core.hub import DEFAULT_MODEL_DIR, load_model

    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    model = load_model("default")
    assert model.decoder_name == config.get("decoder", "table4")
    assert isinstance(model.decoder, Decoder if model.decoder_name == "table4" else SkipDecoder)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_the_plain_torch_efficientnet_lite_is_timms_key_for_key_and_map_for_map(name):
    import timm

    from ccc_nodes.core.modeling.efficientnet_lite import EfficientNetLiteFeatures

    theirs = timm.create_model(name, in_chans=1, features_only=True)
    ours = EfficientNetLiteFeatures(name)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(2, 1, 96, 128) * 2 - 1
    for train in (False, True):  # inference, and training's batch statistics
        ours.train(train)
        theirs.train(train)
        with torch.no_grad():
            for a, b in zip(ours(x), theirs(x), strict=True):
                assert torch.equal(a, b)


@pytest.mark.slow
def test_a_skip_model_of_efficientnet_lite_gives_the_logits_it_gave_through_timm():
    import timm

    model = CCCNet(encoder="efficientnet_lite0", decoder_channels=(32, 16, 16), kept=list(range(40)),
                   decoder="skip").eval()
    assert not isinstance(model.encoder, timm.models.efficientnet.EfficientNetFeatures)  # built without timm
    via_timm = CCCNet(encoder="efficientnet_lite0", decoder_channels=(32, 16, 16), kept=list(range(40)),
                      decoder="skip")
    via_timm.encoder = timm.create_model("efficientnet_lite0", in_chans=1, features_only=True)
    via_timm.load_state_dict(model.state_dict())  # one state dict fits both
    via_timm.eval()
    x = torch.rand(1, 1, 64, 96) * 100
    with torch.no_grad():
        assert torch.equal(model(x), via_timm(x))
