"""Edgewise: ship ML models to fleets of edge devices, per hardware class."""

__version__ = "0.1.0"
