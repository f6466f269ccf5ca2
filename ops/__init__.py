"""Operational commands: package the artifact, plan offline, roll back, smoke-check, replay."""
