"""Experiments (spec 000 Layer E): the statistics of a readout (`stats`). Contracts, assignment, readouts and the
``experiment.ship`` decision node build on it."""
