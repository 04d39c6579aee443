"""Promotion and deployment: the challenger registered, the staged rollout (staging, shadow, canary), the champion, production, canary rollback and the prediction log."""
