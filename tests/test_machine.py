"""What runs record about their machine (pipeline/machine.py), read from /proc/cpuinfo-style files."""

from __future__ import annotations

from pathlib import Path

from pipeline.machine import cpu_has_bfloat16_units, cpu_name, describe, machine_info

EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n\n"
XEON = ("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
        "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n\n")


def test_cpu_name_and_flags_come_from_the_first_processor(tmp_path: Path) -> None:
    (tmp_path / "epyc").write_text(EPYC + EPYC.replace("processor\t: 0", "processor\t: 1").replace("avx2", "amx_bf16"))
    (tmp_path / "xeon").write_text(XEON)
    assert cpu_name(str(tmp_path / "epyc")) == "AMD EPYC (family 25, model 1)"
    assert not cpu_has_bfloat16_units(str(tmp_path / "epyc"))
    assert cpu_name(str(tmp_path / "xeon")).startswith("Intel(R) Xeon(R) Platinum 8481C") and cpu_has_bfloat16_units(str(tmp_path / "xeon"))
    assert cpu_name(str(tmp_path / "absent"))  # not Linux: the platform's name, never an error
    assert not cpu_has_bfloat16_units(str(tmp_path / "absent"))


def test_machine_info_names_device_threads_and_cpu() -> None:
    info = machine_info("cpu")
    assert info["device"] == "cpu" and info["processes"] == 1 and "gpu" not in info
    assert info["torch_threads"] >= 1 and info["cpus_visible"] >= 1 and info["cpu"] == cpu_name()
    assert {"torch", "transformers", "accelerate"} <= info.keys()
    line = describe(info)
    assert line.startswith("CPU, ") and cpu_name() in line and f"{info['torch_threads']} torch threads" in line
    assert describe({**info, "device": "cuda", "gpu": "NVIDIA H100", "processes": 8}).startswith("NVIDIA H100, 8 processes, ")
