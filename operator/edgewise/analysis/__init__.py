"""Canary analysis providers: where a class's canary and stable measurements come from.

`provider` holds the interface (`AnalysisProvider`, `AnalysisTarget`) and the factory;
`runtime` (default) reads the pods, `prometheus` asks a Prometheus server, `golden` is the
golden-input check both run. Judging is pure and lives in `edgewise.core.analysis`.
"""
