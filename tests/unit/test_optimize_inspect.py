"""Pure model inspection, calibration-data checks and the agreement measure."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgewise.optimize import data, evaluate
from edgewise.optimize.errors import CalibrationMismatch
from edgewise.optimize.inspect import analyze, resolve_nodes


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:  # noqa: ANN001
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def matmul_model() -> onnx.ModelProto:
    """ids → Gather(embedding 50×8) → MatMul 8×32 → MatMul 32×8 → out (plus a tiny Conv)."""
    return _model(
        [helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
         helper.make_node("MatMul", ["e", "w1"], ["h"], name="first"),
         helper.make_node("Softmax", ["h"], ["s"], name="soft"),
         helper.make_node("MatMul", ["s", "w2"], ["out"], name="last")],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", "S", 8])],
        [_w("emb", 50, 8), _w("w1", 8, 32), _w("w2", 32, 8)])


def conv_model() -> onnx.ModelProto:
    """x → Conv(16×3×3×3) → GlobalAveragePool → Flatten → Gemm(10×16) → Softmax."""
    return _model(
        [helper.make_node("Conv", ["x", "cw"], ["c"], name="conv"),
         helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw"], ["l"], name="fc", transB=1),
         helper.make_node("Softmax", ["l"], ["probs"], name="softmax")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        [_w("cw", 16, 3, 3, 3), _w("fw", 10, 16)])


def test_matmul_heavy_model_is_a_transformer() -> None:
    info = analyze(matmul_model())
    assert info.kind == "transformer"
    assert info.matmul_weights == 8 * 32 + 32 * 8 and info.conv_weights == 0
    assert info.weight_nodes == ("first", "last")
    assert info.first_last_weight_nodes == ("first", "last")
    assert info.vocab_sizes == {"ids": 50}  # synthetic ids must stay inside the embedding table
    assert info.opset == 17
    assert info.classifier_outputs == ()  # a [N, S, 8] tensor is not a classifier
    assert [s.describe() for s in info.inputs] == ["ids: int64[N, S]"]


def test_conv_model_is_convolutional_with_a_classifier_head() -> None:
    info = analyze(conv_model())
    assert info.kind == "convolutional"
    assert info.conv_weights == 16 * 27 and info.matmul_weights == 160
    assert info.classifier_outputs == ("probs",)
    assert info.first_last_weight_nodes == ("conv", "fc")


def test_model_without_weights_is_other() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [])
    assert analyze(model).kind == "other"


def test_keep_float_resolves_names_and_operator_types() -> None:
    info = analyze(matmul_model())
    nodes, unknown = resolve_nodes(info, ["last", "Softmax", "NoSuchThing"])
    assert nodes == ["last", "soft"] and unknown == ["NoSuchThing"]
    assert resolve_nodes(info, ["MatMul"]) == (["first", "last"], [])


def test_calibration_names_must_match_and_say_expected_vs_got() -> None:
    info = analyze(matmul_model())
    with pytest.raises(CalibrationMismatch, match=r"expected \['ids'\], got \['input_ids'\]"):
        data.check(info, {"input_ids": np.zeros((4, 6), np.int64)})


def test_calibration_rank_dim_and_type_must_match() -> None:
    info = analyze(conv_model())
    with pytest.raises(CalibrationMismatch, match="expected rank 4"):
        data.check(info, {"x": np.zeros((4, 3, 32), np.float32)})
    with pytest.raises(CalibrationMismatch, match=r"axis 2 is 16, the model wants 32"):
        data.check(info, {"x": np.zeros((4, 3, 16, 32), np.float32)})
    with pytest.raises(CalibrationMismatch, match="expected float32, got int64"):
        data.check(info, {"x": np.zeros((4, 3, 32, 32), np.int64)})


def test_calibration_arrays_need_the_same_sample_count() -> None:
    model = _model([helper.make_node("Add", ["a", "b"], ["c"], name="add")],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
                    helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2])],
                   [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 2])], [])
    with pytest.raises(CalibrationMismatch, match="same, non-zero number of samples"):
        data.check(analyze(model), {"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})


def test_calibration_is_cast_and_capped() -> None:
    info = analyze(conv_model())
    out = data.check(info, {"x": np.zeros((10, 3, 32, 32), np.float64)}, max_samples=4)
    assert out["x"].dtype == np.float32 and out["x"].shape[0] == 4


def test_synthetic_inputs_follow_the_model() -> None:
    info = analyze(matmul_model())
    arrays = data.synthesize(info, 5)
    assert arrays["ids"].shape == (5, data.SYNTHETIC_SEQUENCE) and arrays["ids"].dtype == np.int64
    assert arrays["ids"].max() < 50
    assert data.synthesize(analyze(conv_model()), 2)["x"].shape == (2, 3, 32, 32)


def test_agreement_of_identical_outputs_is_perfect() -> None:
    ref = {"y": np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)}
    ag = evaluate.agreement(ref, {"y": ref["y"].copy()}, ["y"])
    assert ag.min_cosine == pytest.approx(1.0) and ag.max_abs_error == 0.0
    assert ag.top1_agreement_percent == 100.0 and ag.samples == 6


def test_agreement_sees_the_worst_sample_and_flipped_classes() -> None:
    ref = np.tile(np.array([[0.1, 0.7, 0.2]], np.float32), (4, 1))
    got = ref.copy()
    got[2] = [0.7, 0.1, 0.2]  # one sample's top class changed
    ag = evaluate.agreement({"p": ref}, {"p": got}, ["p"])
    assert ag.top1_agreement_percent == 75.0
    assert ag.min_cosine < 0.5 < ag.mean_cosine
    assert ag.max_abs_error == pytest.approx(0.6)


def test_agreement_treats_nan_as_total_disagreement() -> None:
    ref = {"y": np.ones((2, 3), np.float32)}
    ag = evaluate.agreement(ref, {"y": np.array([[1, 1, 1], [np.nan, 1, 1]], np.float32)})
    assert ag.min_cosine == -1.0 and ag.max_abs_error == float("inf")
