"""space/README.md's front matter as Hugging Face reads it: parsed by huggingface_hub's
SpaceCard, with the values Spaces and ZeroGPU accept (huggingface_hub's hardware names,
ZeroGPU's documented Python, a short_description of at most 60 characters)."""

from pathlib import Path

from helpers import need

hf = need("huggingface_hub")

ROOT = Path(__file__).resolve().parents[1]
ZEROGPU_PYTHON = "3.10.13"  # the Python ZeroGPU documents (huggingface.co/docs/hub/spaces-zerogpu)


def test_front_matter_is_a_valid_space_card():
    card = hf.SpaceCard.load(ROOT / "space" / "README.md", ignore_metadata_errors=False)
    data = card.data.to_dict()
    assert data["sdk"] == "gradio" and (ROOT / "space" / data["app_file"]).is_file()
    assert 0 < len(data["short_description"]) <= 60, data["short_description"]
    assert data["suggested_hardware"] in {h.value for h in hf.SpaceHardware}
    if data["suggested_hardware"].startswith("zero"):
        assert data["python_version"] == ZEROGPU_PYTHON
    assert data["license"] == "apache-2.0" and isinstance(data.get("models", []), list)
    # the Gradio the Space pins is the one the project tests with
    gradio = need("gradio")
    assert data["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]
