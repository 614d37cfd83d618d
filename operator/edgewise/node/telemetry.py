"""Power (W) and temperature (°C) of this node, read from sysfs where the hardware exposes them.

Sources, all under one sysfs root (`edgewise agent --sysfs-root`, default /sys, so tests point
the agent at a tree laid out as the drivers lay it out):

- Jetson INA3221 power monitors, hwmon driver (JetPack 5+, upstream kernels):
  `bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{1,2,3}_input` bus voltage (mV), `curr{1,2,3}_input`
  current (mA), `in{1,2,3}_label` the rail. Power per rail is V × I; the node's power is the
  input rail (`INPUT_RAILS`, e.g. VDD_IN of Orin Nano/NX), never a sum of rails that may
  overlap. Older JetPack (4.x) iio driver: `bus/i2c/drivers/ina3221x/*/iio:device*/
  in_power{N}_input` (mW) with `rail_name_{N}`.
- Intel RAPL powercap: `class/powercap/intel-rapl:N/energy_uj` (µJ counters, top-level zones
  only: subzones are parts of their package), wrapping at `max_energy_range_uj`; power is the
  energy difference between two reads over the time between them, so the first read gives no
  number, only a baseline.
- Temperatures: `class/thermal/thermal_zone*/temp` (m°C, named by `type`) and
  `class/hwmon/hwmon*/temp*_input` (m°C, named by `name` and `temp*_label`); the node's
  temperature is the hottest sensor.

Where none of them is present, or a file does not read, a reading is None with the reason:
the agent never reports a made-up number.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Input rails: the whole module's supply, as the board names it in the INA3221 channel labels.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VDD_5V_IN", "VIN")
# Sensors that report no die temperature: Jetson's PMIC-Die zone reads a fixed 100 °C on many boards.
IGNORED_SENSORS = re.compile(r"PMIC", re.IGNORECASE)
# A RAPL rate over less than this is mostly rounding of the counter: keep the older baseline.
RAPL_MIN_SECONDS = 0.5


@dataclass(frozen=True)
class Rail:
    """One measured rail or RAPL zone."""

    name: str
    watts: float
    source: str


@dataclass(frozen=True)
class Sensor:
    name: str
    celsius: float
    source: str


@dataclass(frozen=True)
class PowerReading:
    """The node's power, or None and why not."""

    watts: float | None
    source: str = ""  # e.g. "ina3221 VDD_IN", "rapl package-0+package-1"
    reason: str = ""  # set when watts is None
    rails: tuple[Rail, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"watts": _round(self.watts), "source": self.source, "reason": self.reason,
                "rails": [{"name": r.name, "watts": _round(r.watts), "source": r.source} for r in self.rails]}


@dataclass(frozen=True)
class TemperatureReading:
    """The node's hottest sensor, or None and why not."""

    celsius: float | None
    sensor: str = ""
    reason: str = ""
    sensors: tuple[Sensor, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"celsius": _round(self.celsius), "sensor": self.sensor, "reason": self.reason,
                "sensors": [{"name": s.name, "celsius": _round(s.celsius), "source": s.source}
                            for s in self.sensors]}


@dataclass(frozen=True)
class Telemetry:
    power: PowerReading
    temperature: TemperatureReading

    def to_json(self) -> dict[str, Any]:
        return {"power": self.power.to_json(), "temperature": self.temperature.to_json()}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _read_number(path: Path) -> float | None:
    """A sysfs number, or None when it is absent or does not read (ENODATA of a disabled channel, EIO)."""
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_text(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _index(path: Path, pattern: str) -> int:
    m = re.search(pattern, path.name)
    return int(m.group(1)) if m else 0


# --- INA3221 ----------------------------------------------------------------------------------


def ina3221_rails(root: Path) -> list[Rail]:
    """Every labelled INA3221 channel with a bus voltage and a current (hwmon driver), then the iio one."""
    rails: list[Rail] = []
    for hwmon in sorted(root.glob("bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        for volt in sorted(hwmon.glob("in[123]_input")):
            n = _index(volt, r"in(\d)_input")
            mv, ma = _read_number(volt), _read_number(hwmon / f"curr{n}_input")
            label = _read_text(hwmon / f"in{n}_label")
            if mv is None or ma is None or not label or label.upper() == "NC":
                continue  # disabled or unconnected channel
            rails.append(Rail(label, mv * ma / 1e6, f"ina3221 {hwmon.parent.parent.name} channel {n}"))
    for dev in sorted(root.glob("bus/i2c/drivers/ina3221x/*/iio:device*")):
        for power in sorted(dev.glob("in_power[0-9]_input")):
            n = _index(power, r"in_power(\d)_input")
            mw = _read_number(power)
            label = _read_text(dev / f"rail_name_{n}")
            if mw is None or not label:
                continue
            rails.append(Rail(label, mw / 1000, f"ina3221x {dev.parent.name} channel {n}"))
    return rails


def read_ina3221(root: Path) -> PowerReading | None:
    """The input rail's power; None when the node has no INA3221 at all (another source may apply)."""
    rails = ina3221_rails(root)
    if not rails:
        return None
    by_name = {r.name.upper(): r for r in rails}
    for name in INPUT_RAILS:
        if name in by_name:
            rail = by_name[name]
            return PowerReading(rail.watts, f"ina3221 {rail.name}", rails=tuple(rails))
    return PowerReading(None, "ina3221", reason=f"no input rail ({', '.join(INPUT_RAILS)}) among the INA3221 "
                                                f"rails {', '.join(r.name for r in rails)}; rails reported only",
                        rails=tuple(rails))


# --- RAPL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Energy:
    at: float
    microjoules: dict[str, float]  # zone directory -> energy_uj
    ranges: dict[str, float]  # zone directory -> max_energy_range_uj
    names: dict[str, str]  # zone directory -> name


@dataclass
class RaplReader:
    """Power from RAPL energy counters: the difference of two reads over the time between them.

    Stateful (the last read is the baseline of the next), thread-safe, clock injectable. A counter
    that went down wrapped at `max_energy_range_uj` (once: reads are far more frequent than a wrap).
    """

    root: Path
    clock: Callable[[], float] = time.monotonic
    _last: _Energy | None = None
    _last_power: PowerReading | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def zones(self) -> list[Path]:
        # Top-level zones only (intel-rapl:0, not intel-rapl:0:0): subzones are inside their package.
        return sorted(p for p in self.root.glob("class/powercap/intel-rapl:*")
                      if re.fullmatch(r"intel-rapl:\d+", p.name))

    def _energy(self, zones: list[Path]) -> _Energy:
        uj, ranges, names = {}, {}, {}
        for z in zones:
            e = _read_number(z / "energy_uj")
            if e is None:
                continue  # unreadable (recent kernels: root only) or missing
            uj[z.name] = e
            ranges[z.name] = _read_number(z / "max_energy_range_uj") or 0.0
            names[z.name] = _read_text(z / "name", z.name)
        return _Energy(self.clock(), uj, ranges, names)

    def read(self) -> PowerReading | None:
        """The power since the last read; None when the node has no RAPL zone."""
        zones = self.zones()
        if not zones:
            return None
        with self._lock:
            now = self._energy(zones)
            if not now.microjoules:
                return PowerReading(None, "rapl", reason="RAPL energy_uj not readable (the agent needs read "
                                                         "access to /sys/class/powercap/*/energy_uj)")
            prev = self._last
            if prev is None:
                self._last = now
                return PowerReading(None, "rapl", reason="first RAPL reading taken; power needs a second one")
            seconds = now.at - prev.at
            if seconds < RAPL_MIN_SECONDS:
                return self._last_power or PowerReading(None, "rapl", reason="RAPL baseline too recent")
            self._last = now
            rails = []
            for zone, energy in now.microjoules.items():
                if zone not in prev.microjoules:
                    continue
                used = energy - prev.microjoules[zone]
                if used < 0:  # wrapped around its range
                    used += now.ranges.get(zone, 0.0)
                if used < 0:
                    continue  # no range to unwrap with: skip rather than guess
                rails.append(Rail(now.names[zone], used / 1e6 / seconds, f"rapl {zone}"))
            self._last_power = _rapl_total(rails)
            return self._last_power


def _rapl_total(rails: list[Rail]) -> PowerReading:
    if not rails:
        return PowerReading(None, "rapl", reason="no RAPL zone read twice")
    # psys (the platform, where the firmware has it) covers the packages: take it alone.
    psys = [r for r in rails if r.name == "psys"]
    used = psys or [r for r in rails if r.name.startswith("package")] or rails
    return PowerReading(sum(r.watts for r in used), "rapl " + "+".join(r.name for r in used), rails=tuple(rails))


# --- temperatures -----------------------------------------------------------------------------


def temperature_sensors(root: Path) -> list[Sensor]:
    sensors: list[Sensor] = []
    for zone in sorted(root.glob("class/thermal/thermal_zone*"), key=lambda p: _index(p, r"(\d+)$")):
        mc = _read_number(zone / "temp")
        name = _read_text(zone / "type", zone.name)
        if mc is not None:
            sensors.append(Sensor(name, mc / 1000, f"thermal {zone.name}"))
    for hwmon in sorted(root.glob("class/hwmon/hwmon*"), key=lambda p: _index(p, r"(\d+)$")):
        chip = _read_text(hwmon / "name", hwmon.name)
        for temp in sorted(hwmon.glob("temp*_input"), key=lambda p: _index(p, r"temp(\d+)_input")):
            mc = _read_number(temp)
            if mc is None:
                continue
            label = _read_text(hwmon / temp.name.replace("_input", "_label"))
            sensors.append(Sensor(f"{chip} {label}".strip() if label else chip, mc / 1000, f"hwmon {hwmon.name}"))
    return sensors


def read_temperature(root: Path) -> TemperatureReading:
    sensors = temperature_sensors(root)
    usable = [s for s in sensors if not IGNORED_SENSORS.search(s.name)]
    if not usable:
        why = ("no thermal zone or hwmon temperature under " + str(root) if not sensors
               else "only sensors that report no die temperature (PMIC)")
        return TemperatureReading(None, reason=why, sensors=tuple(sensors))
    hottest = max(usable, key=lambda s: s.celsius)
    return TemperatureReading(hottest.celsius, hottest.name, sensors=tuple(sensors))


# --- the node ---------------------------------------------------------------------------------


class NodeTelemetry:
    """What the agent reports: INA3221 first (the whole module), else RAPL, else unavailable."""

    def __init__(self, root: Path = Path("/sys"), clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.rapl = RaplReader(root, clock)

    def power(self) -> PowerReading:
        reading = read_ina3221(self.root)
        if reading is not None and reading.watts is not None:
            return reading
        rapl = self.rapl.read()
        if rapl is not None and (rapl.watts is not None or reading is None):
            return rapl
        if reading is not None:
            return reading
        return PowerReading(None, reason=f"no power monitor under {self.root} (INA3221 or RAPL powercap)")

    def read(self) -> Telemetry:
        return Telemetry(self.power(), read_temperature(self.root))
