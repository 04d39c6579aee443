"""Daily monitoring assets: feature drift and label volume (more in issue 6)."""
