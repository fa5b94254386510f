"""Audit records of exchanges, their hash chain, and the sinks that keep them."""
