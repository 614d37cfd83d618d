"""Canary analysis, the I/O side: where a class's canary and stable measurements come from.

`provider` is the interface (`AnalysisProvider`, `AnalysisTarget`); `runtime` (default) reads the
pods, `prometheus` asks a Prometheus server, `golden` is the golden-input check both run;
`factory` alone knows every provider. `measure` is what the controller calls: it picks each
class's pods, fetches the golden inputs (`golden_file`, `local_files`) and runs a provider in one
event loop per reconcile. Judging is pure and lives in `edgewise.core.analysis`.
"""
