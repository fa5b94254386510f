"""Load tests: locust users against a real gateway in front of a fast fake upstream."""
