"""The floor: the least a Python HTTP inference server can do, to measure what is left to win.

Run as `python floor_server.py MODEL_PATH MODEL_NAME PORT THREADS`. One aiohttp handler
takes the bench's binary-tensor request (tritonclient's body, fixed layout), reads the
inputs with `np.frombuffer`, calls `session.run` right on the event loop and writes the
binary response. No validation, no batching, no statistics, no gRPC: not a server anyone
should run, but its overhead over raw `session.run` is the lower bound for any server
that speaks HTTP with the same client on the same machine.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from aiohttp import web

HEADER = "Inference-Header-Content-Length"
TRITON = {"float32": "FP32", "int64": "INT64"}  # all the bench's models use


def main(path: str, name: str, port: int, threads: int) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # ONNX Runtime's default spinning, like raw's faster run
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
    inputs = [(i.name, np.dtype(dtypes[i.type])) for i in session.get_inputs()]

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        header_length = int(request.headers[HEADER])
        doc = json.loads(body[:header_length])
        shapes = {i["name"]: i["shape"] for i in doc["inputs"]}
        feed, offset = {}, header_length
        for input_name, dtype in inputs:
            shape = shapes[input_name]
            count = int(np.prod(shape))
            feed[input_name] = np.frombuffer(body, dtype, count, offset).reshape(shape)
            offset += count * dtype.itemsize
        wanted = [o["name"] for o in doc["outputs"]]
        values = session.run(wanted, feed)
        blobs = [np.ascontiguousarray(v).tobytes() for v in values]
        out = [{"name": n, "datatype": TRITON[v.dtype.name], "shape": list(v.shape),
                "parameters": {"binary_data_size": len(b)}} for n, v, b in zip(wanted, values, blobs, strict=True)]
        header = json.dumps({"model_name": name, "model_version": "1", "outputs": out}).encode()
        return web.Response(body=b"".join([header, *blobs]), content_type="application/octet-stream",
                            headers={HEADER: str(len(header))})

    async def ready(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post(f"/v2/models/{name}/infer", infer)
    app.router.add_get(f"/v2/models/{name}/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
