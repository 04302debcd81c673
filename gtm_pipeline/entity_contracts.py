"""Moved: entity contracts live in the clean stage's package (`gtm_pipeline.clean.contract`, compiled to SQL by
`gtm_pipeline.clean.rules`). Kept only until every importer uses the new place; see README "Layout"."""

from gtm_pipeline.clean.contract import *  # noqa: F403
from gtm_pipeline.clean.contract import _cached  # noqa: F401
from gtm_pipeline.clean.rules import quote_ident, type_label, typed_sql  # noqa: F401
