# The two set-up commands of README.md. Both install the locked environment first.
.PHONY: demo test ui demo-proof

# The demo's seed: same seed, same data and the same story on any day (the calendar is fixed, MLOPS_TODAY).
SEED ?= 7

# Install, then the whole platform end to end: demo data, data layer, training with gates, staged rollout,
# then the closed loop (data lands, is served and monitored; sensors retrain and roll out on drift).
demo:
	bash scripts/bootstrap.sh
	.venv/bin/mlops demo run --loop-days 8 --seed $(SEED)

# Install and run the test suite (what CI runs).
test:
	bash scripts/bootstrap.sh
	bash scripts/system_packages.sh
	.venv/bin/mlops prepare
	bash scripts/run_tests.sh

ui:
	bash scripts/bootstrap.sh
	.venv/bin/mlops ui

# Proof of first contact: make demo twice from clean clones for 3 seeds, both cores kept busy (about 1 hour).
demo-proof:
	bash scripts/bootstrap.sh
	.venv/bin/python benchmarks/demo_twice.py
