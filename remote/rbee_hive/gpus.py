"""GPU discovery: NVML through ctypes where the driver has it, else `nvidia-smi`
(its CSV output parsed). Both report the same fields."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from rbee_hive import nvml

QUERY = "index,name,memory.total,memory.used,temperature.gpu,utilization.gpu"


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Parse `--format=csv,noheader,nounits` output; memory is in MiB."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        gpus.append(
            {
                "index": int(fields[0]),
                "name": fields[1],
                "memory_total_mib": _number(fields[2]),
                "memory_used_mib": _number(fields[3]),
                "temperature_c": _number(fields[4]),
                "utilization_pct": _number(fields[5]) if len(fields) > 5 else None,
            }
        )
    return gpus


def _number(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:  # "[N/A]" on some boards
        return None


def query_gpus(timeout: float = 5.0) -> tuple[list[dict[str, Any]], str]:
    """The GPUs and where they were read from: "nvml", "nvidia-smi" or "none"."""
    cards = nvml.read_gpus()
    if cards is not None:
        return cards, "nvml"
    if shutil.which("nvidia-smi") is None:
        return [], "none"
    return query_nvidia_smi(timeout), "nvidia-smi"


def query_nvidia_smi(timeout: float = 5.0) -> list[dict[str, Any]]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run(
            [binary, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)
