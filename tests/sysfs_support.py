"""Fake sysfs trees laid out as the Linux drivers lay them out, for the agent's `--sysfs-root`.

- INA3221, hwmon driver: /sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmonN/
  in{1,2,3}_label, in{1,2,3}_input (bus voltage, mV), curr{1,2,3}_input (mA), in{4,5,6}_input
  (shunt voltage, µV), shunt{1,2,3}_resistor (µΩ) — as Documentation/hwmon/ina3221.rst lists them;
  a Jetson Orin Nano/NX names channel 1 VDD_IN (the module's input).
- INA3221, JetPack 4 iio driver: /sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:deviceN/
  rail_name_N, in_voltageN_input (mV), in_currentN_input (mA), in_powerN_input (mW).
- RAPL: /sys/class/powercap/intel-rapl:N/{name,energy_uj,max_energy_range_uj}, subzones
  intel-rapl:N:M beside them (the class directory lists every zone flat, as sysfs does).
- thermal: /sys/class/thermal/thermal_zoneN/{type,temp} (m°C); hwmon: /sys/class/hwmon/hwmonN/
  {name,tempK_input,tempK_label}.
"""

from __future__ import annotations

from pathlib import Path

INA_DEVICE = "1-0040"


def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    tmp.replace(path)  # readers never see a half-written number


def ina3221(root: Path, rails: dict[str, tuple[float, float]], device: str = INA_DEVICE, hwmon: int = 1) -> Path:
    """Channels 1..3 labelled by `rails` (label → (mV, mA)); returns the hwmon directory."""
    d = root / "bus" / "i2c" / "drivers" / "ina3221" / device / "hwmon" / f"hwmon{hwmon}"
    _write(d / "name", "ina3221")
    for n, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        _write(d / f"in{n}_label", label)
        _write(d / f"in{n}_enable", 1)
        _write(d / f"in{n}_input", int(mv))
        _write(d / f"curr{n}_input", int(ma))
        _write(d / f"in{n + 3}_input", int(ma * 5))  # shunt µV over a 5 mΩ resistor
        _write(d / f"shunt{n}_resistor", 5000)
    return d


def set_ina3221_current(hwmon_dir: Path, channel: int, ma: float) -> None:
    _write(hwmon_dir / f"curr{channel}_input", int(ma))


def ina3221x(root: Path, rails: dict[str, float], device: str = INA_DEVICE) -> Path:
    """JetPack 4's iio layout: rail label → power in mW (voltage and current beside it)."""
    d = root / "bus" / "i2c" / "drivers" / "ina3221x" / device / "iio:device0"
    for n, (label, mw) in enumerate(rails.items()):
        _write(d / f"rail_name_{n}", label)
        _write(d / f"in_voltage{n}_input", 5000)
        _write(d / f"in_current{n}_input", int(mw / 5))
        _write(d / f"in_power{n}_input", int(mw))
    return d


def rapl_zone(root: Path, index: int, name: str, energy_uj: int, max_range_uj: int = 262143328850,
              sub: int | None = None) -> Path:
    zone = f"intel-rapl:{index}" + (f":{sub}" if sub is not None else "")
    d = root / "class" / "powercap" / zone
    _write(d / "name", name)
    _write(d / "energy_uj", energy_uj)
    _write(d / "max_energy_range_uj", max_range_uj)
    _write(d / "enabled", 1)
    return d


def set_energy(zone_dir: Path, energy_uj: int) -> None:
    _write(zone_dir / "energy_uj", energy_uj)


def thermal_zone(root: Path, index: int, kind: str, millicelsius: int) -> Path:
    d = root / "class" / "thermal" / f"thermal_zone{index}"
    _write(d / "type", kind)
    _write(d / "temp", millicelsius)
    return d


def hwmon_temp(root: Path, index: int, chip: str, sensors: dict[str, int]) -> Path:
    """An hwmon chip with temperature inputs: label → m°C (temp1_input, temp1_label, ...)."""
    d = root / "class" / "hwmon" / f"hwmon{index}"
    _write(d / "name", chip)
    for k, (label, mc) in enumerate(sensors.items(), start=1):
        _write(d / f"temp{k}_input", mc)
        if label:
            _write(d / f"temp{k}_label", label)
    return d


def jetson_orin_nano(root: Path, vdd_in_ma: float = 1800, millicelsius: int = 48_500) -> Path:
    """An Orin Nano's monitors: VDD_IN at 5 V (9 W at 1800 mA), CPU/GPU/CV and SOC rails, thermal zones
    including the PMIC-Die zone that reads a fixed 100 °C. Returns the INA3221 hwmon directory."""
    hw = ina3221(root, {"VDD_IN": (5000, vdd_in_ma), "VDD_CPU_GPU_CV": (5000, 600), "VDD_SOC": (5000, 400)})
    for i, (kind, mc) in enumerate([("cpu-thermal", millicelsius), ("gpu-thermal", millicelsius - 1000),
                                    ("soc0-thermal", millicelsius - 2000), ("PMIC-Die", 100_000)]):
        thermal_zone(root, i, kind, mc)
    return hw
