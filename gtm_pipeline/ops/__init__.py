"""Operational records a team acts on: incidents (``ops.incidents``) and owner notifications
(``ops.notifications``) with their delivery."""
