"""Split drivers in processes of their own: one that fails or dies does not stop the others."""

from __future__ import annotations

import functools
import math
import os

from search.driver_processes import JobEnd, run_in_processes


def test_a_job_that_raises_or_dies_ends_alone():
    ends = run_in_processes({
        "ok": functools.partial(math.sqrt, 16.0),
        "raises": functools.partial(math.sqrt, -1.0),
        "dies": functools.partial(os._exit, 3),  # as a killed driver process: no answer at all
        "also ok": functools.partial(math.hypot, 3.0, 4.0),
    })
    assert ends["ok"] == JobEnd(value=4.0) and ends["also ok"] == JobEnd(value=5.0)
    assert ends["raises"] == JobEnd(error="ValueError: math domain error")
    assert ends["dies"] == JobEnd(error="its driver process ended with exit code 3")
