import sys
from pathlib import Path

# serving_world and generated_history are plain helper modules of other test folders.
sys.path.insert(0, str(Path(__file__).parents[1] / "test_serving"))
sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter):
    from reliability_results import ROWS, markdown

    if ROWS:
        terminalreporter.write_sep("=", "reliability results (docs/reliability.md)")
        terminalreporter.write_line(markdown())
