"""What runs inside the execution environment: fetch, verify, extract and run a bundle.

Depends on the standard library (and fsspec for remote stores) only, so it starts fast and
can be copied into any interpreter or image."""
