"""Dagster plumbing shared by every stage: resources, partitions, the refresh automation, the in-process runner the
CLI uses and the local instance's pooled event storage."""
