"""What the benchmarks print about the machine they ran on."""

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    """Cores, CPU model, operating system and Python, on one line."""
    return (
        f"{os.cpu_count()} cores (nproc), {cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )
