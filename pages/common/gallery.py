"""A paged grid of sample tiles: a page number, "24 of 139 (1–24), page 1 of 6", and the tiles of
that page only (only they are decoded and encoded)."""
from collections.abc import Callable

import numpy as np
import streamlit as st

from core.analysis.gallery import PAGE_SIZE, Tile, page_count, page_of, tiles_html


def paged_tiles(items: np.ndarray, tiles_of: Callable[[np.ndarray], list[Tile]], key: str,
                per_page: int = PAGE_SIZE) -> None:
    """Draw one page of `items` as tiles; `key` names the page number's widget, so give each list
    (a confusion cell, a split) its own key and it starts on page 1."""
    pages = page_count(len(items), per_page)
    # A fixed width: in a narrow column Streamlit hides the number's - and + buttons.
    number = st.number_input(f"Page (of {pages})", 1, pages, 1, key=key, width=180) if pages > 1 else 1
    page = page_of(items, number, per_page)
    st.caption(f"Showing {page.summary()}")
    if len(page.items):
        st.html(tiles_html(tiles_of(page.items)))
