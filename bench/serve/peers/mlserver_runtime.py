"""A minimal ONNX Runtime model class for MLServer, as a user would write one.

Loaded by `mlserver start` from the model-settings.json the benchmark writes next to it
(`implementation: mlserver_runtime.OnnxRuntimeModel`). Inference runs where MLServer runs
`predict`: on its event loop with parallel_workers=0, in a worker process otherwise.
"""

from __future__ import annotations

import os

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("BENCH_THREADS", "0"))
        self._session = ort.InferenceSession(self.settings.parameters.uri, options,
                                             providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        names = [o.name for o in payload.outputs] if payload.outputs else self._outputs
        values = self._session.run(names, feed)
        return InferenceResponse(
            model_name=self.name, id=payload.id,
            outputs=[NumpyCodec.encode_output(n, v) for n, v in zip(names, values, strict=True)],
        )
