"""Per-hardware-class model optimization: int8 quantization, fp16 conversion, gates, reports.

The entry point is `edgewise.optimize.pipeline.optimize(...)`; the `edgewise optimize`
command wraps it. Pure decisions (`choose`, `gates`, `inspect`) are separate from the
steps that run onnxruntime's and onnxconverter-common's tools (`quantize`, `fp16`,
`graph`, `evaluate`, `memory`), so the decisions are unit-tested exhaustively and the
steps are tested on small generated models.
"""
