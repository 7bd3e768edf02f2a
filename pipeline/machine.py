"""The machine a result came from: a budget in minutes buys what the machine can do (on 2 AVX2 cores a
10-minute run makes about half the steps it makes on 2 Xeon cores), so runs and comparisons name it.

Linux's /proc/cpuinfo gives the CPU's name, family and model and its feature flags; elsewhere the name
falls back to `platform` and the flags are empty.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

import torch

CPUINFO = "/proc/cpuinfo"


@functools.cache
def _cpuinfo_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's `key: value` lines."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name(cpuinfo: str = CPUINFO) -> str:
    """e.g. "AMD EPYC (family 25, model 1)": virtual machines often hide the model number in the name."""
    fields = _cpuinfo_fields(cpuinfo)
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def cpu_has_bfloat16_units(cpuinfo: str = CPUINFO) -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX-512 BF16; Linux's flags)."""
    flags = _cpuinfo_fields(cpuinfo).get("flags", "").split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def machine_info(device: torch.device | str = "cpu", processes: int = 1) -> dict[str, Any]:
    """What `train_results.json` records about where a run (its last segment, if resumed) trained."""
    device = torch.device(device)
    info: dict[str, Any] = {"cpu": cpu_name(), "cpus_visible": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "cpu_bfloat16_units": cpu_has_bfloat16_units(), "device": device.type, "processes": processes}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    import accelerate
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__, accelerate=accelerate.__version__)
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for a model card, e.g. "CPU, 2 torch threads of 2 visible CPUs, AMD EPYC (family 25, model 1)"."""
    where = info.get("gpu") or info.get("device", "cpu").upper()
    procs = f", {info['processes']} processes" if info.get("processes", 1) > 1 else ""
    return f"{where}{procs}, {info.get('torch_threads')} torch threads of {info.get('cpus_visible')} visible CPUs, {info.get('cpu')}"
