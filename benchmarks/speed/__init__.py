"""Speed measurements, one module each, behind one command: `python -m benchmarks.speed [PART]`.

Benchmarks, not tests: they time, they never assert a time. Each writes its table to stdout
and its JSON (the table, the arguments, the machine) through `report.write_json`.
"""
