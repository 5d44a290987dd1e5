"""ONNX export and onnxruntime latency (the optional ``deploy`` extra).

Tolerance: onnxruntime's outputs equal PyTorch's to ``atol=rtol=1e-4`` on
logits of order 1 (dense graphs reorder float sums; QDQ graphs dequantize to
PyTorch's weights bit for bit, which is checked exactly).
"""

import os

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from skcompress import (
    Binarizer,
    Compactor,
    Distiller,
    LowRankCompressor,
    Pruner,
    Quantizer,
)
from skcompress.datasets import load_digits_images
from skcompress.export import OnnxExport, export_onnx, measure_onnx_latency
from skcompress.models import make_digits_net

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
numpy_helper = pytest.importorskip("onnx.numpy_helper")

SHAPE = (1, 8, 8)
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def data():
    X, y = load_digits_images()
    return X[:200], y[:200]


@pytest.fixture(scope="module")
def net(data):
    torch.manual_seed(0)
    return make_digits_net(max_epochs=1, module__channels=(8, 16),
                           module__hidden=8).fit(*data)


def _fit(compressor, data):
    torch.manual_seed(0)
    return compressor.fit(*data)


@pytest.fixture(scope="module")
def compressed(net, data):
    """One fitted compressor per technique, no fine-tuning (export is the test)."""
    quick = dict(prefit=True, finetune_epochs=0)
    return {
        "filter": _fit(Pruner(net, sparsity=0.5, granularity="filter", **quick), data),
        "weight": _fit(Pruner(net, sparsity=0.8, **quick), data),
        "lowrank": _fit(LowRankCompressor(net, rank=0.5, **quick), data),
        "compactor": _fit(Compactor(net, **quick), data),
        "distiller": _fit(Distiller(make_digits_net(
            max_epochs=1, module__channels=(4, 8), module__hidden=8), teacher=net),
            data),
        "uniform8": _fit(Quantizer(net, bits=8, method="uniform", **quick), data),
        "uniform4": _fit(Quantizer(net, bits=4, method="uniform", **quick), data),
        "uniform8-asymmetric": _fit(
            Quantizer(net, bits=8, method="uniform", symmetric=False,
                      per_channel=False, **quick), data),
        "kmeans": _fit(Quantizer(net, bits=4, random_state=0, **quick), data),
        "binary": _fit(Binarizer(net, **quick), data),
        "sparse-uniform4": _fit(
            Quantizer(Pruner(net, sparsity=0.8, **quick), bits=4, method="uniform",
                      finetune_epochs=0), data),
    }


@pytest.fixture(scope="module")
def exported(net, compressed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    models = {"base": net, **compressed}
    return {name: export_onnx(model, folder / f"{name}.onnx", SHAPE)
            for name, model in models.items()}


def _initializers(path):
    graph = onnx.load(str(path)).graph
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _n_weights(path):
    return sum(a.size for a in _initializers(path).values())


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": X})[0]


def _torch_outputs(model, X):
    module = model.module_ if hasattr(model, "module_") else model.estimator_.module_
    module.eval()
    with torch.no_grad():
        return module(torch.as_tensor(X)).numpy()


@pytest.mark.parametrize("name", [
    "base", "filter", "weight", "lowrank", "compactor", "distiller", "uniform8",
    "uniform4",
    "uniform8-asymmetric", "kmeans", "binary", "sparse-uniform4",
])
def test_onnxruntime_outputs_equal_pytorch_outputs(name, net, compressed, exported,
                                                   data):
    X = data[0][:64]
    model = net if name == "base" else compressed[name]
    # batch 64 through a graph traced at batch 1: the batch axis is dynamic
    np.testing.assert_allclose(_run(exported[name].path, X),
                               _torch_outputs(model, X), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name, expected", [
    ("base", "dense"), ("filter", "dense"), ("weight", "dense"),
    ("lowrank", "dense"), ("compactor", "dense"), ("distiller", "dense"),
    ("kmeans", "dense"), ("uniform8", "qdq-int8"),
    ("uniform4", "qdq-int8"), ("uniform8-asymmetric", "qdq-int8"),
    ("binary", "qdq-int8"), ("sparse-uniform4", "qdq-int8"),
])
def test_format_says_how_weights_are_stored(name, expected, exported):
    result = exported[name]
    assert isinstance(result, OnnxExport)
    assert result.format == expected
    assert result.input_shape == SHAPE and result.opset >= 13
    assert result.n_bytes == os.path.getsize(result.path)
    inits = _initializers(result.path)
    has_int8 = any(a.dtype == np.int8 for a in inits.values())
    assert has_int8 == (expected == "qdq-int8")


def test_layers_report_each_weight(exported, compressed):
    assert exported["uniform8"].layers == dict.fromkeys(
        ["conv1", "conv2", "fc1", "fc2"], "qdq-int8")
    assert set(exported["kmeans"].layers.values()) == {"dense"}
    # the Binarizer's signs and the 8-bit integers of the layers it keeps
    # (by default the first and the last, keep_bits=8) are all int8 codes
    binarizer = compressed["binary"]
    binary = exported["binary"].layers
    assert set(binarizer.kept_layers_) == {"conv1", "fc2"}
    assert {name for name, f in binary.items() if f == "qdq-int8"} == {
        *binarizer.layers_, *binarizer.kept_layers_}


@pytest.mark.parametrize("name, bits", [("uniform8", 8), ("uniform4", 4),
                                        ("sparse-uniform4", 4)])
def test_qdq_weights_are_the_quantizer_integers_exactly(name, bits, compressed,
                                                        exported):
    inits = _initializers(exported[name].path)
    module = compressed[name].estimator_.module_
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        q = inits[f"{layer}.weight_quantized"]
        scale = inits[f"{layer}.weight_scale"]
        assert q.dtype == np.int8 and f"{layer}.weight" not in inits
        assert np.abs(q).max() <= 2 ** (bits - 1) - 1  # symmetric grid
        assert scale.shape == (q.shape[0],)  # per output channel, axis 0
        shape = (-1,) + (1,) * (q.ndim - 1)
        weight = module.get_submodule(layer).weight.detach().numpy()
        dequantized = (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
        np.testing.assert_array_equal(dequantized, weight)
    ops = [node.op_type for node in onnx.load(exported[name].path).graph.node]
    assert ops.count("DequantizeLinear") == 4


def test_asymmetric_codes_are_shifted_into_int8(exported, compressed):
    inits = _initializers(exported["uniform8-asymmetric"].path)
    q, zero_point = inits["fc1.weight_quantized"], inits["fc1.weight_zero_point"]
    scale = inits["fc1.weight_scale"]
    assert q.dtype == zero_point.dtype == np.int8 and scale.ndim == 0  # per tensor
    weight = compressed["uniform8-asymmetric"].estimator_.module_.fc1.weight
    dequantized = (q.astype(np.float32) - np.float32(zero_point)) * scale
    np.testing.assert_array_equal(dequantized, weight.detach().numpy())


def test_structural_compression_exports_a_smaller_graph(exported):
    base = _n_weights(exported["base"].path)
    assert _n_weights(exported["filter"].path) < 0.6 * base
    for name in ("lowrank", "compactor", "distiller"):
        assert _n_weights(exported[name].path) < base, name
    # weight pruning and codebooks keep every weight: same dense graph
    assert _n_weights(exported["weight"].path) == base
    assert _n_weights(exported["kmeans"].path) == base


def test_qdq_files_are_smaller_than_dense(exported):
    dense = exported["base"].n_bytes
    for name in ("uniform8", "uniform4", "binary"):
        assert exported[name].n_bytes < 0.5 * dense
    assert exported["uniform8"].n_bytes == exported["uniform4"].n_bytes  # 1 B/code


def test_user_net_is_not_modified(net, compressed, tmp_path):
    quantizer = compressed["uniform8"]
    module = quantizer.estimator_.module_
    before = {k: v.clone() for k, v in module.state_dict().items()}
    export_onnx(quantizer, tmp_path / "q.onnx", SHAPE)
    after = module.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(module.fc1).__name__.startswith("Parametrized")


def test_batchnorm_net_exports_qdq(data, tmp_path):
    torch.manual_seed(0)
    net = make_digits_net(arch="residual", max_epochs=1).fit(*data)
    quantizer = Quantizer(net, bits=8, method="uniform", prefit=True,
                          finetune_epochs=0).fit(*data)
    result = export_onnx(quantizer, tmp_path / "residual.onnx", SHAPE)
    assert result.format == "qdq-int8"
    assert set(result.layers.values()) == {"qdq-int8"}
    X = data[0][:32]
    np.testing.assert_allclose(_run(result.path, X), _torch_outputs(quantizer, X),
                               atol=ATOL, rtol=RTOL)


def test_input_shape_is_inferred_for_a_linear_first_layer(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU())
    result = export_onnx(module, tmp_path / "mlp.onnx")
    assert result.input_shape == (5,)
    X = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(_run(result.path, X), expected, atol=ATOL, rtol=RTOL)


def test_measure_onnx_latency(exported):
    result = exported["uniform8"]
    for source in (result, result.path, open(result.path, "rb").read()):
        seconds = measure_onnx_latency(source, SHAPE, batch_size=8, repeats=2,
                                       warmup=1)
        assert 0 < seconds < 1
    assert measure_onnx_latency(result, SHAPE, batch_size=8, repeats=2, warmup=0,
                                fold_dequantize=True) > 0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"input_shape": None}, ValueError, "input_shape"),
    ({"input_shape": (3, 8, 8)}, ValueError, "input_shape"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"repeats": 1.5}, ValueError, "repeats"),
    ({"warmup": -1}, ValueError, "warmup"),
    ({"n_threads": True}, ValueError, "n_threads"),
    ({"fold_dequantize": "yes"}, TypeError, "fold_dequantize"),
])
def test_measure_onnx_latency_rejects_bad_arguments(kwargs, error, match, exported):
    arguments = {"input_shape": SHAPE, "batch_size": 4, "repeats": 1, **kwargs}
    with pytest.raises(error, match=match):
        measure_onnx_latency(exported["base"], **arguments)


def test_measure_onnx_latency_rejects_bad_models(tmp_path):
    with pytest.raises(ValueError, match="path_or_model"):
        measure_onnx_latency(tmp_path / "missing.onnx", SHAPE)
    with pytest.raises(TypeError, match="path_or_model"):
        measure_onnx_latency(42, SHAPE)


def test_unfitted_estimators_raise_not_fitted(net, tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        export_onnx(Quantizer(net), tmp_path / "q.onnx", SHAPE)
    with pytest.raises(NotFittedError, match="not initialized"):
        export_onnx(make_digits_net(), tmp_path / "n.onnx", SHAPE)
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"fitted": "net"}, TypeError, "fitted"),
    ({"path": 3}, TypeError, "path"),
    ({"path": "missing-folder/x.onnx"}, ValueError, "path"),
    ({"path": "."}, ValueError, "path"),
    ({"input_shape": None}, ValueError, "input_shape"),
    ({"input_shape": (0, 8)}, ValueError, "input_shape"),
    ({"input_shape": (3, 8, 8)}, ValueError, "input_shape"),
    ({"input_shape": "1x8x8"}, TypeError, "input_shape"),
    ({"input_shape": (1, 8.0, 8)}, TypeError, "input_shape"),
    ({"opset": 11}, ValueError, "opset"),
    ({"opset": 99}, ValueError, "opset"),
    ({"opset": 17.0}, TypeError, "opset"),
])
def test_export_rejects_bad_arguments(kwargs, error, match, net, tmp_path,
                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    arguments = {"fitted": net, "path": tmp_path / "x.onnx", "input_shape": SHAPE,
                 **kwargs}
    with pytest.raises(error, match=match):
        export_onnx(**arguments)
    assert not (tmp_path / "x.onnx").exists()


def test_opset_is_honoured(net, tmp_path, data):
    result = export_onnx(net, tmp_path / "o13.onnx", SHAPE, opset=13)
    assert result.opset == 13
    X = data[0][:16]
    np.testing.assert_allclose(_run(result.path, X), _torch_outputs(net, X),
                               atol=ATOL, rtol=RTOL)
