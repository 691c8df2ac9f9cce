"""Runnable examples of embedding the workers; each has a test under tests/examples/."""
