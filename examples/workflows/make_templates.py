"""Write ``example_workflows/``: the editor-format (UI) workflows ComfyUI's template browser
lists for this pack, each with its ``.jpg`` thumbnail, from the API-format graphs below.

    python examples/workflows/make_templates.py

Nodes are laid out in columns by their depth in the graph and stacked in each column with
a gap, so none overlaps another (tests/test_templates.py checks it). Every widget value is
the API graph's, or the node's default. The thumbnails are made by the tool itself: the
grey example photo and what the template's graph gives, run here through the same nodes
(the first is also docs/icon.png, the Registry's icon).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageSequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "example_workflows"
ZOOM = 0.8  # the editor's zoom a template opens at, or less: its width fits a window of
WINDOW_WIDTH = 1600  # px
MASK_FILE = ROOT / "examples" / "masks" / "chelsea_mask.png"  # LoadImage gives MASK = 1 - alpha
FRAMES_FILE = ROOT / "examples" / "frames" / "chelsea_pan.gif"  # a clip: LoadImage gives an IMAGE batch

# The template graphs (API format). LoadImage names are files ComfyUI's input/ must hold:
# chelsea.jpg (examples/grey), chelsea_reference.jpg (examples/reference/chelsea.jpg),
# chelsea_mask.png (examples/masks), chelsea_pan.gif (examples/frames).
from ccc_nodes.core.settings import INPUT_SIZE, Decoding  # noqa: E402 - the widgets' defaults

_DEC = Decoding()
_DECODE = {"decode": _DEC.mode, "temperature": _DEC.temperature}
_MODEL = {"class_type": "CCCModelLoader", "inputs": {"model": "default", "device": "auto", "precision": "auto"}}
TEMPLATES: dict[str, tuple[str, dict]] = {
    "ccc_colorize": ("One node: Load Image -> CCC++ Colorize -> Save Image", {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": _MODEL,
        "3": {"class_type": "CCCColorize", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "decode": "argmax",
                                                      "temperature": _DEC.temperature, "size": INPUT_SIZE}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "ccc_colorized"}},
    }),
    "ccc_classes": ("The modular graph: Grayscale -> Classes -> Classes -> Lab, with the class map", {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": _MODEL,
        "3": {"class_type": "CCCGrayscaleToClasses", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "size": INPUT_SIZE}},
        "4": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["3", 0], "decode": "annealed-mean",
                                                          "temperature": _DEC.temperature}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "ccc_colorized"}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}},
    }),
    "ccc_harmonize_mask": ("Harmonisation with a MASK from core Load Image (paint it in the mask editor)", {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": _MODEL,
        "3": {"class_type": "CCCGrayscaleToClasses", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "size": INPUT_SIZE}},
        "7": {"class_type": "LoadImage", "inputs": {"image": "chelsea_mask.png"}},
        "4": {"class_type": "CCCSAMHarmonize", "inputs": {"classes": ["3", 0], "mask": ["7", 1], "min_area": 0.002,
                                                          "dominance": 0.3, "max_dev": 12.0, "sigma": 1.0,
                                                          "points_per_side": 32}},
        "5": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["4", 0], **_DECODE}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "ccc_harmonized"}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}},
    }),
    "ccc_metrics": ("Metrics against the colour original (the table shows on the node)", {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea_reference.jpg"}},
        "2": _MODEL,
        "3": {"class_type": "CCCColorize", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "decode": "argmax",
                                                      "temperature": _DEC.temperature, "size": INPUT_SIZE}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "ccc_colorized"}},
        "5": {"class_type": "CCCMetrics", "inputs": {"image": ["3", 0], "reference": ["1", 0], "ccc_model": ["2", 0]}},
    }),
    "ccc_hints": ("Colour hints: a painted MASK and a point steer the colours (chain as many as you like)", {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": _MODEL,
        "3": {"class_type": "CCCGrayscaleToClasses", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "size": INPUT_SIZE}},
        "7": {"class_type": "LoadImage", "inputs": {"image": "chelsea_mask.png"}},
        "4": {"class_type": "CCCColorHint", "inputs": {"classes": ["3", 0], "color": "#c8793c", "strength": 1.0,
                                                       "mask": ["7", 1], "x": -1, "y": -1}},
        "5": {"class_type": "CCCColorHint", "inputs": {"classes": ["4", 0], "color": "#5d8aa8", "strength": 0.8,
                                                       "x": 20, "y": 20}},
        "6": {"class_type": "CCCClassesToLab", "inputs": {"classes": ["5", 0], **_DECODE}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "ccc_hinted"}},
    }),
    "ccc_colorize_sequence": ("A clip as an IMAGE batch (a multi-frame Load Image, or Load Video): "
                              "CCC++ Colorize Sequence, colours carried along the motion", {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea_pan.gif"}},
        "2": _MODEL,
        "3": {"class_type": "CCCColorizeSequence", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "temporal": True,
                                                              "carry": 0.7, **_DECODE,
                                                              "size": INPUT_SIZE}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "ccc_sequence"}},
    }),
}

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
COLUMN, GAP = 400, 40


def node_specs() -> dict[str, dict]:
    """class -> {inputs: [(name, type, is_widget, default)], outputs: [(name, type)], title}."""
    from ccc_nodes.interfaces.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    specs = {}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        inputs = []
        for group in ("required", "optional"):
            for inp, (kind, *rest) in spec.get(group, {}).items():
                extra = rest[0] if rest else {}
                widget = isinstance(kind, list) or kind in WIDGET_TYPES
                default = extra.get("default", kind[0] if isinstance(kind, list) and kind else None)
                inputs.append((inp, "COMBO" if isinstance(kind, list) else kind, widget, default))
        outputs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES, strict=True))
        specs[name] = {"inputs": inputs, "outputs": outputs, "title": NODE_DISPLAY_NAME_MAPPINGS[name]}
    # ComfyUI's core image nodes (the same sockets as ccc serve's own): widgets as ComfyUI saves them
    specs["LoadImage"] = {"inputs": [("image", "COMBO", True, None), ("upload", "IMAGEUPLOAD", True, "image")],
                          "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")], "title": "Load Image"}
    specs["SaveImage"] = {"inputs": [("images", "IMAGE", False, None), ("filename_prefix", "STRING", True, "ComfyUI")],
                          "outputs": [], "title": "Save Image"}
    specs["PreviewImage"] = {"inputs": [("images", "IMAGE", False, None)], "outputs": [], "title": "Preview Image"}
    return specs


def node_size(kind: str, spec: dict) -> list[int]:
    """A size that holds the node's sockets and widgets (image nodes get room for the picture)."""
    sockets = max(len([i for i in spec["inputs"] if not i[2]]), len(spec["outputs"]))
    widgets = len([i for i in spec["inputs"] if i[2]])
    height = 46 + 22 * sockets + 26 * widgets
    if kind in ("LoadImage", "SaveImage", "PreviewImage"):
        height = max(height, 320)
    if kind == "CCCMetrics":
        height = 260  # room for the table the extension shows
    return [340 if kind != "CCCMetrics" else 640, height]


def to_ui(graph: dict, specs: dict) -> dict:
    """API-format graph -> editor-format workflow (version 0.4)."""
    ids = {key: i + 1 for i, key in enumerate(graph)}
    depth: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in depth:
            ups = [v[0] for v in graph[key]["inputs"].values() if isinstance(v, list)]
            depth[key] = 1 + max((level(u) for u in ups), default=-1)
        return depth[key]

    links, nodes = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for key, node in graph.items():
        for inp, value in node["inputs"].items():
            if isinstance(value, list):
                spec_type = next(t for n, t, w, _ in specs[node["class_type"]]["inputs"] if n == inp)
                links.append([len(links) + 1, ids[value[0]], value[1], ids[key],
                              [n for n, _, w, _ in specs[node["class_type"]]["inputs"] if not w].index(inp), spec_type])
                out_links.setdefault((value[0], value[1]), []).append(len(links))
    y_next: dict[int, int] = {}
    order = sorted(graph, key=lambda k: (level(k), ids[k]))
    for n, key in enumerate(order):
        node = graph[key]
        kind = node["class_type"]
        spec = specs[kind]
        size = node_size(kind, spec)
        col = level(key)
        x, y = 40 + COLUMN * col, y_next.get(col, 40)
        y_next[col] = y + size[1] + GAP + 30  # + the title bar
        link_of = {ln[4]: ln[0] for ln in links if ln[3] == ids[key]}
        sockets = [(n_, t) for n_, t, w, _ in spec["inputs"] if not w]
        widgets = [node["inputs"].get(n_, d) for n_, t, w, d in spec["inputs"] if w]
        nodes.append({
            "id": ids[key], "type": kind, "pos": [x, y], "size": size, "flags": {}, "order": n, "mode": 0,
            "inputs": [{"name": s, "type": t, "link": link_of.get(i)} for i, (s, t) in enumerate(sockets)],
            "outputs": [{"name": s, "type": t, "links": out_links.get((key, i)) or None, "slot_index": i}
                        for i, (s, t) in enumerate(spec["outputs"])],
            "properties": {"Node name for S&R": kind}, "widgets_values": widgets,
        })
    right = max(n["pos"][0] + n["size"][0] for n in nodes) + 40
    scale = math.floor(100 * min(ZOOM, WINDOW_WIDTH / right)) / 100  # the whole width in the window at once
    return {"last_node_id": max(ids.values()), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": scale, "offset": [0, 0]}}, "version": 0.4}


def overlaps(workflow: dict) -> list[tuple[int, int]]:
    """Pairs of nodes whose boxes (title bar included) overlap."""
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in workflow["nodes"]]
    return [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]


def make_mask() -> None:
    """A PNG whose alpha is 0 over Chelsea's head: core LoadImage's MASK (1 - alpha) is 1 there."""
    grey = Image.open(ROOT / "examples" / "grey" / "chelsea.jpg")
    alpha = Image.new("L", grey.size, 255)
    ImageDraw.Draw(alpha).ellipse([140, 40, 330, 230], fill=0)
    out = Image.new("RGBA", grey.size, (0, 0, 0, 0))
    out.putalpha(alpha)
    MASK_FILE.parent.mkdir(exist_ok=True)
    out.save(MASK_FILE, optimize=True)


def make_frames(n: int = 8) -> None:
    """An animated GIF of grey frames (192x144) panning 8 photo pixels a frame across the grey
    example photo."""
    grey = Image.open(ROOT / "examples" / "grey" / "chelsea.jpg").convert("L")
    frames = [grey.crop((60 + 8 * i, 30, 60 + 8 * i + 300, 255)).resize((192, 144), Image.LANCZOS) for i in range(n)]
    FRAMES_FILE.parent.mkdir(exist_ok=True)
    frames[0].save(FRAMES_FILE, save_all=True, append_images=frames[1:], duration=100, loop=0)


def thumbnail(name: str, graph: dict) -> Image.Image:
    """The grey photo beside what the graph's last image node gets, run through the nodes here."""
    import torch

    from ccc_nodes.interfaces import nodes as N

    def load(file: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = {"chelsea.jpg": ROOT / "examples" / "grey" / "chelsea.jpg", "chelsea_mask.png": MASK_FILE,
                "chelsea_reference.jpg": ROOT / "examples" / "reference" / "chelsea.jpg",
                "chelsea_pan.gif": FRAMES_FILE}[file]
        im = Image.open(path)
        rgb = torch.from_numpy(np.stack([np.asarray(f.convert("RGB"), dtype=np.float32) / 255
                                         for f in ImageSequence.Iterator(im)]))  # every frame, as LoadImage
        im.seek(0)
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255 if "A" in im.getbands() else np.ones(im.size[::-1])
        return rgb, torch.from_numpy(1 - alpha)[None].float()

    values: dict[str, tuple] = {}
    done: set[str] = set()
    while len(done) < len(graph):
        for key, node in graph.items():
            ups = [v[0] for v in node["inputs"].values() if isinstance(v, list)]
            if key in done or any(u not in done for u in ups):
                continue
            args = {k: (values[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
            kind = node["class_type"]
            if kind == "LoadImage":
                values[key] = load(args["image"])
            elif kind in ("SaveImage", "PreviewImage"):
                values[key] = (args["images"],)
            else:
                cls = N.NODE_CLASS_MAPPINGS[kind]
                if kind == "CCCModelLoader":
                    args["device"] = "cpu"
                result = getattr(cls(), cls.FUNCTION)(**args)
                values[key] = result["result"] if isinstance(result, dict) else result
            done.add(key)
    last = next(k for k in reversed(list(graph)) if graph[k]["class_type"] == "SaveImage")
    result = values[last][0][0].numpy()
    grey = np.asarray(Image.open(ROOT / "examples" / "grey" / "chelsea.jpg").convert("RGB"), dtype=np.float32) / 255
    if len(values[last][0]) > 1:  # a clip: its first grey frame, then the first, middle and last colorized ones
        clip = values[last][0]
        grey, result = values["1"][0][0].numpy(), np.concatenate(
            [np.concatenate([clip[i].numpy(), np.ones((clip.shape[1], 8, 3), np.float32)], axis=1)
             for i in (0, len(clip) // 2, len(clip) - 1)], axis=1)[:, :-8]
    both = np.concatenate([grey, np.ones((grey.shape[0], 8, 3), np.float32), result], axis=1)
    picture = Image.fromarray((both * 255).round().astype(np.uint8))
    picture.thumbnail((512, 512))
    return picture


def main() -> None:
    make_mask()
    make_frames()
    specs = node_specs()
    OUT.mkdir(exist_ok=True)
    for name, (title, graph) in TEMPLATES.items():
        workflow = to_ui(graph, specs)
        workflow["extra"]["ccc_template"] = title
        assert not overlaps(workflow), (name, overlaps(workflow))
        (OUT / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        picture = thumbnail(name, graph)
        picture.save(OUT / f"{name}.jpg", quality=88)
        if name == "ccc_colorize":  # the pack's icon in the Comfy Registry (at most 800 x 400)
            picture.save(ROOT / "docs" / "icon.png", optimize=True)
        print(f"wrote {OUT / name}.json and .jpg")


if __name__ == "__main__":
    main()
