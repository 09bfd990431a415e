"""eloquence bench (placeholder during development)."""
