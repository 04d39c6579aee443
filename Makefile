# The two set-up commands of README.md. Both install the locked environment first.
.PHONY: demo test ui

# Install, generate demo data and materialize the data layer end to end.
demo:
	bash scripts/bootstrap.sh
	.venv/bin/mlops demo run

# Install and run the test suite (what CI runs).
test:
	bash scripts/bootstrap.sh
	bash scripts/system_packages.sh
	.venv/bin/mlops prepare
	.venv/bin/python -m pytest

ui:
	bash scripts/bootstrap.sh
	.venv/bin/mlops ui
