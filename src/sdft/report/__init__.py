"""Run reports: the seed / SFT / SDFT comparison table, its plots, as Markdown and self-contained HTML."""
