"""Importing real exports: a mapping spec (``contracts/mappings/*.yaml``, `spec`) maps a foreign data set onto the
landing layout, and `mapping` reads, applies and runs it. See docs/contracts.md."""
