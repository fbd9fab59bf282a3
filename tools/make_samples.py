"""Regenerate samples/ from scikit-image's public-domain/CC0 data (pip download scikit-image==0.24.0)."""
import sys
from PIL import Image

data = sys.argv[1] if len(sys.argv) > 1 else "skimage/data"
a = Image.open(f"{data}/astronaut.png").convert("RGB").resize((480, 480), Image.LANCZOS)
for i, dx in enumerate([60, 70, 80, 90, 100]):
    f = Image.new("RGB", (640, 480), (96, 96, 96))
    f.paste(a, (dx, 0))
    f.save(f"samples/astronaut_{i:02d}.jpg", quality=88)
c = Image.open(f"{data}/coffee.png").convert("RGB")
w, h = c.size
c = c.resize((int(w * 480 / h), 480), Image.LANCZOS).crop((0, 0, 640, 480))
c.save("samples/coffee_noface.jpg", quality=88)
