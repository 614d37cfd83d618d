"""`edgewise serve`: an ONNX Runtime server that speaks Triton's KServe-V2 protocol (HTTP, gRPC, metrics)."""
