"""``GET /system_stats``: what ComfyUI reports of the machine (memory, device, versions)."""

from __future__ import annotations

import os
import platform
import sys

from ccc_nodes import __version__

__all__ = ["COMFYUI_API_VERSION", "memory", "system_stats"]

COMFYUI_API_VERSION = "0.3.64"  # the ComfyUI release whose API and frontend (1.27.10) this server follows


def memory() -> tuple[int, int]:
    """(total, available) RAM in bytes: psutil's figures, else /proc/meminfo's (Linux),
    else the physical pages with the available ones where the system tells them."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return vm.total, vm.available
    except ImportError:
        pass
    try:
        fields = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, ValueError, KeyError, IndexError):
        pass
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    total = os.sysconf("SC_PHYS_PAGES") * page if page else 0
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError):
        free = 0  # unknown: never reported as all of it
    return total, free


def system_stats() -> dict:
    """``GET /system_stats``: the machine, the versions and the device, as ComfyUI reports them."""
    import torch

    ram_total, ram_free = memory()
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        device = {"name": torch.cuda.get_device_name(), "type": "cuda", "index": torch.cuda.current_device(),
                  "vram_total": total, "vram_free": free, "torch_vram_total": total, "torch_vram_free": free}
    else:
        device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                  "torch_vram_total": ram_total, "torch_vram_free": ram_free}
    return {
        "system": {"os": os.name, "ram_total": ram_total, "ram_free": ram_free, "comfyui_version": COMFYUI_API_VERSION,
                   "ccc_nodes_version": __version__, "required_frontend_version": "1.27.10",
                   "python_version": sys.version, "pytorch_version": torch.__version__, "embedded_python": False,
                   "argv": sys.argv, "platform": platform.platform()},
        "devices": [device],
    }
