"""Renders printable ASCII (32–126) in DejaVu Sans Mono into the 1-bit font
atlas that `difi report` draws its labels with (src/report/font.png): one
row of 6×11 cells, a glyph per cell. DejaVu fonts are free to redistribute
(Bitstream Vera license). Run once; the atlas is committed.

usage: make-font-atlas.py /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf OUT.png
"""

import sys

from PIL import Image, ImageDraw, ImageFont

CELL_W, CELL_H = 6, 11
font = ImageFont.truetype(sys.argv[1], 10)
chars = [chr(c) for c in range(32, 127)]
atlas = Image.new("L", (CELL_W * len(chars), CELL_H), 0)
draw = ImageDraw.Draw(atlas)
for i, ch in enumerate(chars):
    draw.text((i * CELL_W, -1), ch, fill=255, font=font)
atlas = atlas.point(lambda v: 255 if v >= 96 else 0)
atlas.save(sys.argv[2], optimize=True)
print(f"{len(chars)} glyphs, {atlas.size[0]}x{atlas.size[1]} → {sys.argv[2]}")
