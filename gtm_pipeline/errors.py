"""The package's one root exception.

Every error a user can cause (a bad contract, a malformed export, a wrong CLI argument) is raised as a
``GtmPipelineError`` whose message names the thing, the place and the fix, so that the CLI and Dagster show that
message instead of a stack trace from deep inside a library.
"""


class GtmPipelineError(Exception):
    """Root of every error this package raises on purpose."""


class ContractError(GtmPipelineError):
    """A contract, mapping, playbook or SLO file is malformed; the message names file, field and what is allowed."""


class ExpressionError(ContractError):
    """An expression in a contract is not in the allowed grammar or names an unknown column."""


class IngestError(GtmPipelineError):
    """A landing file cannot be read at all (as opposed to single bad lines, which go to the rejects table)."""


class RunFailed(GtmPipelineError):
    """A Dagster run the command started failed, or a blocking check stopped it. The CLI exits 1 on it (2 is for
    usage errors and problems to fix before anything runs; docs/operations.md, "Exit codes"); the message names the
    failed step or the blocking check (asset, day, check) and the command that shows more."""
