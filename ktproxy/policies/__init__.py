"""Policies: classes with optional hooks, compiled into a chain once per config."""
