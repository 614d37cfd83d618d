"""A minimal ONNX Runtime model class for KServe's Python model server, as a user would write one.

Run as `python kserve_server.py --model_name NAME --model_path PATH --http_port N`.
`predict` is synchronous, so KServe calls it on its event loop, as its own sklearn and
xgboost servers do. The response carries an id: KServe's REST encoder needs one.
"""

from __future__ import annotations

import argparse
import os
import uuid

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype


class OnnxRuntimeModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("BENCH_THREADS", "0"))
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in payload.request_outputs] if payload.request_outputs else self.output_names
        outputs = []
        for name, value in zip(names, self.session.run(names, feed), strict=True):
            out = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
            out.set_data_from_numpy(value, binary_data=False)  # to_rest re-encodes per request
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start(
        [OnnxRuntimeModel(args.model_name, args.model_path)])
