"""The skorch header and the module tree: what a file sets must be checked
at load, not fail later in predict; building the module must cost what the
file pays for."""

import pytest

from .helpers import (
    check_format_error,
    loads_case,
    pack,
    run_case,
    run_cases,
    unpack,
)


def _outcomes(dense, X_small, edits):
    cases = []
    for edit in edits:
        header, blob = unpack(dense.data)
        edit(header)
        cases.append(loads_case(pack(header, blob), X_small))
    return run_cases(cases)


def _set(path, value):
    def edit(header):
        node = header
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def test_net_params_that_predict_does_not_use_may_load(dense, X_small):
    edits = [_set(["net", "params", "lr"], 1e30), _set(["net", "params", "verbose"], 3),
             _set(["net", "params", "max_epochs"], 0),
             _set(["net", "params", "predict_nonlinearity"], None)]
    for outcome in _outcomes(dense, X_small, edits):
        assert outcome.kind in ("loaded", "format_error"), outcome.summary
        assert not outcome.result.get("predict_error"), outcome.summary


BAD_PARAMS = [("batch_size", 0), ("batch_size", -5), ("batch_size", 1.5),
              ("batch_size", "x"), ("batch_size", None), ("batch_size", True),
              ("batch_size", 10**30),
              ("predict_nonlinearity", "x"), ("predict_nonlinearity", 1),
              ("predict_nonlinearity", [1])]


def test_net_params_are_checked_at_load(dense, X_small):
    """Net params a file sets must be values predict accepts (they loaded,
    then predict raised, before the checks in net.make_net)."""
    edits = [_set(["net", "params", key], value) for key, value in BAD_PARAMS]
    failures = []
    for (key, value), outcome in zip(BAD_PARAMS, _outcomes(dense, X_small, edits)):
        try:
            check_format_error(outcome, key)
        except AssertionError as exc:
            failures.append(f"{key}={value!r}: {exc}")
    assert not failures, "\n".join(failures)


def test_criterion_kwarg_named_trusted(dense):
    """A TypeError from the file's content is a FormatError, whatever its
    message: one that said 'trusted' used to escape as TypeError."""
    header, blob = unpack(dense.data)
    header["net"]["criterion"]["kwargs"] = {"trusted": 1}
    check_format_error(run_case(loads_case(pack(header, blob))))


def test_criterion_kwargs(dense, X_small):
    edits = [_set(["net", "criterion", "kwargs"], kwargs) for kwargs in (
        {"reduction": "bogus"}, {"weight": [1, 2]}, {"no_such_kwarg": 1},
        {"weight": "x"})]
    for outcome in _outcomes(dense, X_small, edits):
        assert outcome.kind in ("loaded", "format_error"), outcome.summary
        assert not outcome.result.get("predict_error"), outcome.summary


BAD_ATTRS = [("dropout", {"p": 5.0}), ("conv1", {"padding": "bogus"}),
             ("conv1", {"padding_mode": "bogus"}), ("conv1", {"padding": [1, 1, 1]}),
             ("pool", {"kernel_size": "x"})]


def test_module_attrs_are_checked_at_load(dense, X_small):
    """Attributes a file sets keep their kind and pass their constructor (they
    loaded, then predict raised, when they were set unchecked)."""
    edits = [_set(["module", "children"], [[child, {"attrs": attrs}]])
             for child, attrs in BAD_ATTRS]
    failures = []
    for (child, attrs), outcome in zip(BAD_ATTRS, _outcomes(dense, X_small, edits)):
        if outcome.kind != "format_error":
            failures.append(f"{child} {attrs}: {outcome.summary}")
    assert not failures, "\n".join(failures)


INCONSISTENT_ATTRS = [("conv2", {"groups": 2}), ("conv2", {"groups": 32}),
                      ("conv2", {"in_channels": 3}), ("conv2", {"out_channels": 10}),
                      ("fc1", {"in_features": 5}), ("fc2", {"out_features": 3})]


def test_module_attrs_must_agree_with_the_tensors(dense, X_small):
    edits = [_set(["module", "children"], [[child, {"attrs": attrs}]])
             for child, attrs in INCONSISTENT_ATTRS]
    failures = []
    for (child, attrs), outcome in zip(INCONSISTENT_ATTRS,
                                       _outcomes(dense, X_small, edits)):
        if outcome.kind != "format_error":
            failures.append(f"{child} {attrs}: {outcome.summary}")
    assert not failures, "\n".join(failures)


NON_POSITIVE = [
    ("attrs", "conv1", {"stride": [0, 0]}), ("attrs", "conv1", {"stride": [-1, 1]}),
    ("attrs", "conv1", {"dilation": [0, 0]}), ("attrs", "pool", {"stride": 0}),
    ("attrs", "pool", {"kernel_size": 0}), ("attrs", "pool", {"dilation": 0}),
    ("kwargs", "conv1", {"in_channels": 1, "out_channels": 32, "kernel_size": 3,
                         "padding": 1, "stride": 0}),
    ("kwargs", "pool", {"kernel_size": 2, "stride": -2}),
]


def test_non_positive_sizes_are_refused_at_load(dense, X_small):
    classes = {"conv1": "torch.nn.modules.conv:Conv2d",
               "pool": "torch.nn.modules.pooling:MaxPool2d"}
    edits = [_set(["module", "children"], [[child, {"attrs": values}]])
             if where == "attrs" else
             _set(["module", "children"], [[child, {"class": classes[child],
                                                    "kwargs": values}]])
             for where, child, values in NON_POSITIVE]
    failures = []
    for (where, child, values), outcome in zip(NON_POSITIVE,
                                               _outcomes(dense, X_small, edits)):
        if outcome.kind != "format_error":
            failures.append(f"{child} {where} {values}: {outcome.summary}")
    assert not failures, "\n".join(failures)


def test_module_attrs_that_are_not_attributes(dense):
    cases = []
    for child, attrs in [("conv1", {"_parameters": {}}), ("conv1", {"forward": 1}),
                         ("conv1", {"no_such_attr": 1}), ("fc1", {"__class__": 1}),
                         ("conv1", {"weight": [1]}), ("conv1", [1])]:
        header, blob = unpack(dense.data)
        header["module"]["children"] = [[child, {"attrs": attrs}]]
        cases.append(loads_case(pack(header, blob)))
    for outcome in run_cases(cases):
        check_format_error(outcome)


def test_module_tree_edits(dense):
    cases = []
    for node in [{"drop": ["no_such_child"]}, {"none": ["no_such_tensor"]},
                 {"children": [["fc1", {"class": "torch.nn.modules.linear:Linear",
                                        "kwargs": {"in_features": 1024,
                                                   "out_features": 9}}]]},
                 {"children": [["a.b", None]]}, {"children": [["", None]]},
                 {"children": [["fc1"]]}, {"children": [[1, None]]},
                 {"children": [["training", {"class": "torch.nn.modules.linear:"
                                             "Identity"}]]},
                 {"children": [["fc1", {"attrs": {}, "x": 1}]]},
                 {"children": [["nope", {"attrs": {}}]]},
                 {"children": [["fc1", {"children": [["x", {"children": []}]]}]]}]:
        header, blob = unpack(dense.data)
        header["module"].update(node)
        cases.append(loads_case(pack(header, blob)))
    for outcome in run_cases(cases):
        check_format_error(outcome)


@pytest.mark.parametrize("module", [
    {"class": "torch.nn.modules.rnn:LSTM",
     "kwargs": {"input_size": 1, "hidden_size": 1, "num_layers": 20000}},
    {"class": "skcompress.models:ResNetCIFAR", "kwargs": {"depth": 12002, "width": 1}},
], ids=["LSTM", "ResNetCIFAR"])
def test_module_construction_is_bounded(dense, module):
    """Building the module costs what the file pays for: constructors that
    make 80,000 parameters (LSTM, quadratic in torch) or 6,000 blocks are
    stopped, not run for minutes."""
    header, _ = unpack(dense.data)
    header["module"] = module
    header["tensors"] = []
    outcome = run_case(loads_case(pack(header, b"")), grace=2.0)
    check_format_error(outcome)
