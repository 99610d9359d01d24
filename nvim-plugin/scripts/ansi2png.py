#!/usr/bin/env python3
"""Renders a terminal screen captured with `tmux capture-pane -p -e` (as
tests/guest/nvim.rs writes it: target/<triple>/debug/nvim-e2e/test-run.ansi)
to a PNG, for the plugin's README.

    ansi2png.py SCREEN.ansi OUT.png [--font /path/to/Mono.ttf] [--size 15]

Needs Pillow (`pip install pillow`, e.g. into the venv install-nvim.sh
makes) and a monospace TrueType font (Debian: fonts-dejavu-core). Handles
what tmux emits: SGR 0/1/3/4/7/22/23/24/27, 30-37/90-97/39, 40-47/100-107/49,
38;5;N / 48;5;N and 38;2;R;G;B / 48;2;R;G;B (58, underline colour, is read
and ignored).
"""

import argparse
import re
import sys

from PIL import Image, ImageDraw, ImageFont

BG = (20, 22, 27)
FG = (224, 226, 234)
BASE16 = [
    (0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16),
    (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
    (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
    (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
]
SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def color256(n):
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + 10 * (n - 232)
    return (v, v, v)


class Pen:
    def __init__(self):
        self.reset()

    def reset(self):
        self.fg = None
        self.bg = None
        self.bold = False
        self.italic = False
        self.underline = False
        self.reverse = False

    def apply(self, params):
        codes = [int(c) if c else 0 for c in re.split("[;:]", params)] if params else [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 3:
                self.italic = True
            elif c == 4:
                self.underline = True
            elif c == 7:
                self.reverse = True
            elif c == 22:
                self.bold = False
            elif c == 23:
                self.italic = False
            elif c == 24:
                self.underline = False
            elif c == 27:
                self.reverse = False
            elif 30 <= c <= 37:
                self.fg = BASE16[c - 30]
            elif 90 <= c <= 97:
                self.fg = BASE16[c - 90 + 8]
            elif c == 39:
                self.fg = None
            elif 40 <= c <= 47:
                self.bg = BASE16[c - 40]
            elif 100 <= c <= 107:
                self.bg = BASE16[c - 100 + 8]
            elif c == 49:
                self.bg = None
            elif c in (38, 48, 58) and i + 1 < len(codes):
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    col = color256(codes[i + 2])
                    i += 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    col = tuple(codes[i + 2:i + 5])
                    i += 4
                else:
                    col = None
                if c == 38:
                    self.fg = col
                elif c == 48:
                    self.bg = col
            i += 1

    def colors(self):
        fg, bg = self.fg or FG, self.bg or BG
        if self.reverse:
            fg, bg = bg, fg
        return fg, bg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("screen")
    ap.add_argument("out")
    ap.add_argument("--font", default="/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")
    ap.add_argument("--bold-font", default="/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf")
    ap.add_argument("--size", type=int, default=15)
    args = ap.parse_args()

    text = open(args.screen, encoding="utf-8", errors="replace").read()
    font = ImageFont.truetype(args.font, args.size)
    try:
        bold = ImageFont.truetype(args.bold_font, args.size)
    except OSError:
        bold = font
    left, top, right, bottom = font.getbbox("M")
    cw = round(font.getlength("M"))
    ch = round(args.size * 1.35)

    pen = Pen()
    rows = []  # each: list of (char, fg, bg, bold, underline)
    for line in text.rstrip("\n").split("\n"):
        cells = []
        pos = 0
        for m in SGR.finditer(line):
            for chr_ in line[pos:m.start()]:
                fg, bg = pen.colors()
                cells.append((chr_, fg, bg, pen.bold, pen.underline))
            pen.apply(m.group(1))
            pos = m.end()
        for chr_ in line[pos:]:
            fg, bg = pen.colors()
            cells.append((chr_, fg, bg, pen.bold, pen.underline))
        # tmux ends a line's attributes at the line's end; the rest of the row
        # keeps the background of the last cell (a reversed statusline).
        rows.append((cells, pen.colors()[1]))

    width = max(100, max((len(c) for c, _ in rows), default=0))
    pad = 12
    img = Image.new("RGB", (width * cw + 2 * pad, len(rows) * ch + 2 * pad), BG)
    draw = ImageDraw.Draw(img)
    for y, (cells, tail_bg) in enumerate(rows):
        py = pad + y * ch
        for x in range(width):
            if x < len(cells):
                c, fg, bg, b, u = cells[x]
            else:
                c, fg, bg, b, u = " ", FG, tail_bg, False, False
            px = pad + x * cw
            if bg != BG:
                draw.rectangle([px, py, px + cw - 1, py + ch - 1], fill=bg)
            if c != " ":
                draw.text((px, py + (ch - (bottom - top)) // 2 - top), c, font=bold if b else font, fill=fg)
            if u:
                draw.line([px, py + ch - 2, px + cw - 1, py + ch - 2], fill=fg)
    img.save(args.out)
    print(f"{args.out}: {img.size[0]}x{img.size[1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
