"""Daily monitoring assets (feature and prediction drift, label volume, live performance, concept drift)
with their verdict checks, and retraining_request, the record of why a retraining ran."""
