"""How long a test waits for a subprocess or a condition before it calls it hung.

Not a speed expectation: no test asserts a wall time (speed is measured by benchmarks.speed).
A machine shared with other jobs runs a step many times slower than a quiet one, so this
only turns a hang into a failure that names what hung, instead of a CI job that never ends.
"""

HUNG_AFTER_S = 3600
