"""Importing real exports: a mapping file (``contracts/mappings/*.yaml``) maps a foreign data set onto the landing
layout. `loader` reads it into the models of `spec`, `columns` and `values`; `mapping.run_mapping` runs it through
`read` (input files), `apply` (one value), `rows` (one row), `write` (landing files) and `report`."""
