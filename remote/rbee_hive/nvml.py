"""GPU readings through NVML (`libnvidia-ml.so.1`) with ctypes.

A call into NVML costs microseconds; starting `nvidia-smi` costs tens of
milliseconds, which a health round over many nodes would feel. The library is
loaded and initialised once per helper; where it is missing (no driver, or a
machine without GPUs) `read_gpus` returns None and the caller falls back to
`nvidia-smi`.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

NVML_SUCCESS = 0
NVML_TEMPERATURE_GPU = 0
LIBRARY_NAMES = ("libnvidia-ml.so.1", "libnvidia-ml.so")


class _Memory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


_lock = threading.Lock()
_state: dict[str, Any] = {"lib": None, "tried": False}


def _library() -> Any:
    """The initialised NVML library, or None; tried once per process."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            _state["lib"] = _load()
        return _state["lib"]


def _load() -> Any:
    for name in LIBRARY_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.nvmlInit_v2() == NVML_SUCCESS:
                return lib
        except AttributeError:
            return None
    return None


def read_gpus() -> list[dict[str, Any]] | None:
    """Each GPU as `gpus.parse_nvidia_smi` reports it, or None without NVML."""
    lib = _library()
    if lib is None:
        return None
    count = ctypes.c_uint()
    if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != NVML_SUCCESS:
        return None
    cards = []
    for index in range(count.value):
        handle = ctypes.c_void_p()
        if lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != NVML_SUCCESS:
            return None
        cards.append(_card(lib, index, handle))
    return cards


def _card(lib: Any, index: int, handle: ctypes.c_void_p) -> dict[str, Any]:
    name = ctypes.create_string_buffer(96)
    memory = _Memory()
    temperature = ctypes.c_uint()
    utilization = _Utilization()
    got_name = lib.nvmlDeviceGetName(handle, name, ctypes.c_uint(len(name))) == NVML_SUCCESS
    got_memory = lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == NVML_SUCCESS
    got_temp = (
        lib.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU, ctypes.byref(temperature))
        == NVML_SUCCESS
    )
    # Some boards (and MIG slices) do not report utilisation: None, as nvidia-smi's [N/A].
    got_util = lib.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(utilization)) == NVML_SUCCESS
    mib = 1024 * 1024
    return {
        "index": index,
        "name": name.value.decode("utf-8", "replace") if got_name else f"GPU {index}",
        "memory_total_mib": memory.total // mib if got_memory else None,
        "memory_used_mib": memory.used // mib if got_memory else None,
        "temperature_c": temperature.value if got_temp else None,
        "utilization_pct": utilization.gpu if got_util else None,
    }
