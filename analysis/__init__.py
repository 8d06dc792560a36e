"""Analysis scripts: plots and reports made from run tables, and benchmarks."""
