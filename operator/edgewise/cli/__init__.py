"""Command-line entry points: `edgewise …` and the `kubectl edgewise` plugin."""
