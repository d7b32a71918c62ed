"""Build and verify the template artifacts of self-hosted E2B sandboxes."""

__version__ = "0.1.0"
