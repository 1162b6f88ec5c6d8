"""Write the example images from scikit-image's bundled photos (grey and reference)."""

from pathlib import Path

from PIL import Image
from skimage import data

HERE = Path(__file__).resolve().parent

for name in ("astronaut", "chelsea", "coffee", "rocket"):
    image = Image.fromarray(getattr(data, name)())
    (HERE / "reference").mkdir(exist_ok=True)
    (HERE / "grey").mkdir(exist_ok=True)
    image.save(HERE / "reference" / f"{name}.jpg", quality=90)
    image.convert("L").save(HERE / "grey" / f"{name}.jpg", quality=90)
