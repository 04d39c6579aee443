"""The deployed endpoint as assets: staging, shadow, canary, production, rollback, the prediction log."""
