"""The closed-loop simulation: days of data driven through the real platform (mlops simulate)."""
