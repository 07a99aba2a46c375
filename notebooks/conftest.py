"""Notebook runs under nbval: always in smoke mode (tiny images, few steps) and offline.

The kernels nbval starts inherit this process's environment, so setting it here reaches them.
"""
import os

os.environ.setdefault("DEHAZEDDPM_SMOKE", "1")
os.environ.setdefault("DEHAZEDDPM_OFFLINE", "1")


def pytest_sessionfinish(session, exitstatus):
    # nbval kills each notebook's kernel, so no finalizer removes its scratch folder: do it here
    from dehazeddpm.viz import remove_stale_scratch
    remove_stale_scratch()
