"""The Metrics node (METHOD.md s. 10)."""

from __future__ import annotations

import torch

from ccc_nodes.core.metrics import GREY_RULE, METRIC_NAMES, markdown_table, metric_classes, score_each
from ccc_nodes.interfaces.nodes.sockets import (
    CATEGORY,
    _image_tensor,
)


class CCCMetrics:
    """IMAGE + reference IMAGE -> a table of the paper's metrics, shown on the node."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {
            "required": {"image": ("IMAGE",), "reference": ("IMAGE", {"tooltip": "Ground-truth colour images."})},
            "optional": {"ccc_model": ("CCC_MODEL", {"tooltip": "Its colour classes are used for TAR, CNR and "
                                                     "CCAR; without it, the embedded default model's classes "
                                                     "(as `ccc evaluate --pred`)."})},
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("table",)
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("MSE, PSNR, SSIM, UIQI, CNR, CCAR, TAR and colourfulness (METHOD.md s. 10) of each image "
                   "against its reference; the reference is resized to the image when sizes differ. Class "
                   "metrics use the connected model's colour classes, else the embedded default model's "
                   "(the same rule as `ccc evaluate`). PSNR of identical images is 100 dB.")

    def measure(self, image, reference, ccc_model=None):
        pred = _image_tensor(image)[..., :3].permute(0, 3, 1, 2)
        gt = _image_tensor(reference, "reference")[..., :3].permute(0, 3, 1, 2)
        if gt.shape[0] not in (1, pred.shape[0]):
            raise ValueError(f"reference: {gt.shape[0]} images for {pred.shape[0]}; give one each, or one for all")
        if gt.shape[-2:] != pred.shape[-2:]:
            gt = torch.nn.functional.interpolate(gt, size=pred.shape[-2:], mode="bilinear", antialias=True,
                                                 align_corners=False)
        gt = gt.expand(pred.shape[0], -1, -1, -1)
        classes, _ = metric_classes(ccc_model.classes if ccc_model is not None else None)
        each, total, grey = score_each(pred, gt, classes)  # a grey reference: left out of the total, as ccc evaluate
        rows = {f"image {i + 1}": row for i, row in enumerate(each)}
        grey = [i + 1 for i in grey]
        if pred.shape[0] > 1 and total is not None:
            rows["all" if not grey else "all colour references"] = total
        # grid: the node does not know the network's input size, so its grid cannot be found here
        table = markdown_table(rows, [k for k in METRIC_NAMES if k not in ("lpips", "fid", "grid")])
        if grey:
            which = f"Reference {grey[0]} is" if len(grey) == 1 else f"References {', '.join(map(str, grey))} are"
            table += (f"\n\n{which} grey ({GREY_RULE}): there are no colours to score against, "
                      "so CNR and TAR are n/a there" + (f", and 'all colour references' leaves {'it' if len(grey) == 1 else 'them'} out."
                                                     if len(rows) > len(grey) else
                      ". Connect the colour original as the reference."))
        return {"ui": {"text": [table]}, "result": (table,)}
