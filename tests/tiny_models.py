"""Small real models built from their libraries' own modules, for tests and for the script the
real-ComfyUI test runs in ComfyUI's environment (which has no pytest): nothing here imports
the test framework. Test files take them through ``helpers``."""

from __future__ import annotations

from functools import partial


def tiny_sam(seed: int = 0):
    """A SAM with segment-anything's own modules, shrunk (64 px input, 1 block, width 32)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    size, patch, dim = 64, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2, out_chans=dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=0,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // patch, size // patch), input_image_size=(size, size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=dim, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
    ).eval()
