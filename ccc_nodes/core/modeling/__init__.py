"""Neural network modules. Their only I/O is :class:`CCCNet`'s Hugging Face format, which it
inherits from huggingface_hub's ``PyTorchModelHubMixin``: ``save_pretrained`` writes and
``from_pretrained`` reads ``config.json`` + ``model.safetensors``, a folder or a Hub repo.
Loading a model for a user (the embedded default, local folders, Hub repos, with one-line
errors that say what to do) is :func:`ccc_nodes.core.hub.load_model`'s."""

from ccc_nodes.core.modeling.ccc import DECODERS, STRIDE, CCCNet, Decoder, SkipDecoder, build_encoder, check_input

__all__ = ["DECODERS", "STRIDE", "CCCNet", "Decoder", "SkipDecoder", "build_encoder", "check_input"]
