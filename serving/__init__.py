"""The HTTP service: online features -> model -> top-k, and the feedback write path."""
