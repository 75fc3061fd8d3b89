"""Tiles of samples, a page at a time: which page of a list is shown and how to say so ("24 of 139"),
and the tiles as HTML with small inline PNGs. The Evaluate page and the HTML report draw the same
tiles, so a caption reads the same in both.

Captions wrap only between words (st.image's broke "sneaker→sandal" mid-word); a word wider than its
tile is cut at the tile's edge, and a file name stays on one line ending in an ellipsis. The full
text is the tile's tooltip.
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass

import numpy as np

PAGE_SIZE = 24
THUMBNAIL_MAX_SIDE = 64     # larger images are shrunk before encoding; digits' 16 px stay as they are
TILE_PX = 72                # what a tile's image is drawn at (small images are scaled up, pixelated)

TILES_CSS = f"""
.tb-tiles{{display:grid;grid-template-columns:repeat(auto-fill,minmax({TILE_PX + 28}px,1fr));gap:12px 8px;margin:4px 0}}
.tb-tile{{margin:0;min-width:0;text-align:center}}
.tb-tile img{{width:{TILE_PX}px;height:{TILE_PX}px;object-fit:contain;image-rendering:pixelated;
  background:#f4f6fa;border-radius:4px;display:block;margin:0 auto}}
.tb-tile figcaption{{font-size:12px;line-height:1.35;margin-top:3px;font-variant-numeric:tabular-nums}}
.tb-tile figcaption span{{display:block;overflow:hidden;overflow-wrap:normal;word-break:normal;hyphens:none}}
.tb-tile figcaption .tb-name{{opacity:.65;font-size:11px;white-space:nowrap;text-overflow:ellipsis}}
"""


@dataclass(frozen=True)
class Page:
    """One page of a list of items."""
    items: np.ndarray       # the items on this page
    number: int             # 1-based, clamped to 1..pages
    pages: int
    total: int
    start: int              # offset of the page's first item in the list

    def summary(self) -> str:
        """'24 of 139 (1–24), page 1 of 6'."""
        if not self.total:
            return "0 of 0"
        return (f"{len(self.items)} of {self.total:,} ({self.start + 1:,}–{self.start + len(self.items):,}), "
                f"page {self.number} of {self.pages}")


def page_count(total: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(total / size))


def page_of(items, number: int, size: int = PAGE_SIZE) -> Page:
    """Page `number` (1-based; out-of-range numbers are clamped) of `items`, `size` to a page."""
    items = np.asarray(items)
    pages = page_count(len(items), size)
    number = min(max(1, int(number)), pages)
    start = (number - 1) * size
    return Page(items[start:start + size], number, pages, len(items), start)


@dataclass(frozen=True)
class Tile:
    image: np.ndarray             # uint8 [H, W] or [H, W, 3]
    lines: tuple[str, ...]        # caption lines, each kept on one line
    tooltip: str = ""             # the full description, shown on hover
    name: str | None = None       # a file name or sample index, drawn muted under the caption


def png_data_uri(image: np.ndarray, max_side: int = THUMBNAIL_MAX_SIDE) -> str:
    """A small PNG of an image as a data: URI; images larger than max_side are shrunk to fit."""
    from PIL import Image
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def tiles_html(tiles: list[Tile], with_style: bool = True) -> str:
    """The tiles as a CSS grid of <figure>s (TILES_CSS included unless with_style is False)."""
    figures = []
    for tile in tiles:
        spans = "".join(f"<span>{html.escape(line)}</span>" for line in tile.lines)
        if tile.name is not None:
            spans += f'<span class="tb-name">{html.escape(tile.name)}</span>'
        figures.append(f'<figure class="tb-tile" title="{html.escape(tile.tooltip or " ".join(tile.lines))}">'
                       f'<img src="{png_data_uri(tile.image)}" alt=""><figcaption>{spans}</figcaption></figure>')
    style = f"<style>{TILES_CSS}</style>" if with_style else ""
    return f'<div class="tb-tiles">{"".join(figures)}</div>{style}'


__all__ = ["PAGE_SIZE", "Page", "Tile", "page_count", "page_of", "png_data_uri", "tiles_html", "TILES_CSS"]
