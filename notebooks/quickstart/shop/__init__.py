"""A tiny local package: what a notebook's project code looks like."""
