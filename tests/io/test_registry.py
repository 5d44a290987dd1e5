"""Crafted headers that name classes outside the registry: load must refuse
them with a FormatError and import nothing (issue 10, "safe by construction")."""

import sys

import pytest
import torch

from skcompress.io import FormatError, load, loads

from .helpers import check_format_error, pack, run_cases, unpack

HOSTILE = [
    "os:system",
    "subprocess:Popen",
    "torch.utils.tensorboard:SummaryWriter",
    "skcompress.cli:main",
    "builtins:eval",
    "skcompress.io.reader:load",
    "torch.nn.modules.linear:NoSuchLayer",
    "torch.nn:Linear",  # a real class, under a path the registry does not use
]


def _place(header, where, path):
    """Name the class ``path`` at ``where`` in the header."""
    module, net = header["module"], header["net"]
    if where == "root":
        module["class"] = path
    elif where == "child":
        module["children"] = [["fc1", {"class": path, "kwargs": {
            "in_features": 1024, "out_features": 8}}]]
    elif where == "net":
        net["class"] = path
    elif where == "criterion":
        net["criterion"]["class"] = path
    elif where == "module_kwarg":
        module.setdefault("kwargs", {})["hidden"] = {"__class__": path}
    elif where == "criterion_kwarg":
        net["criterion"]["kwargs"]["weight"] = {"__class__": path}
    elif where == "nested_kwarg":
        module.setdefault("kwargs", {})["channels"] = [32, {"__class__": path}]
    elif where == "attr":
        module["children"] = [["relu1", {"attrs": {"inplace": {"__class__": path}}}]]
    else:  # pragma: no cover
        raise ValueError(where)
    return header


PLACES = ["root", "child", "net", "criterion", "module_kwarg", "criterion_kwarg",
          "nested_kwarg", "attr"]


def _top_modules(path):
    """The modules a path would import, e.g. ``a``, ``a.b`` for ``a.b:C``."""
    parts = path.split(":")[0].split(".")
    return [".".join(parts[:i + 1]) for i in range(len(parts))]


def test_hostile_class_paths_are_refused_without_import(dense):
    cases, what = [], []
    for where in PLACES:
        for path in HOSTILE:
            header, blob = unpack(dense.data)
            cases.append(_loads_case(pack(_place(header, where, path), blob)))
            what.append((where, path))
    not_yet = {m for path in HOSTILE for m in _top_modules(path)} - set(sys.modules)

    def probe():
        return {"imported": sorted(not_yet & set(sys.modules))}

    for (where, path), outcome in zip(what, run_cases(cases, probe=probe)):
        check_format_error(outcome, "not trusted|not a", what=f"{path} at {where}")
        assert path in outcome.message, outcome.summary
        assert outcome.probe["imported"] == [], (path, where, outcome.probe)
    assert not_yet.isdisjoint(sys.modules)


def _loads_case(data, **kwargs):
    def case():
        loads(data, **kwargs)

    return case


def test_untrusted_error_says_how_to_trust(dense):
    header, blob = unpack(dense.data)
    header["module"]["class"] = "mypackage.nets:MyNet"
    with pytest.raises(FormatError,
                       match=r"'mypackage\.nets:MyNet'.*trusted=\[MyNet\]"):
        loads(pack(header, blob))


def test_trusted_class_of_the_wrong_kind_is_refused(dense):
    cases = []
    for where, path in [("root", "skorch.classifier:NeuralNetClassifier"),
                        ("child", "skorch.classifier:NeuralNetClassifier"),
                        ("net", "torch.nn.modules.linear:Linear"),
                        ("criterion", "skorch.net:NeuralNet")]:
        header, blob = unpack(dense.data)
        cases.append(_loads_case(pack(_place(header, where, path), blob)))
    for outcome in run_cases(cases):
        check_format_error(outcome, "not a .*subclass")


def test_malformed_class_paths(dense):
    cases = []
    for path in ["", "os", "a:b:c", "x" * 600 + ":y", 17, None, ["os", "system"],
                 {"__class__": "os:system"}]:
        header, blob = unpack(dense.data)
        header["module"]["class"] = path
        cases.append(_loads_case(pack(header, blob)))
    for outcome in run_cases(cases):
        check_format_error(outcome)


EVIL_SOURCE = '''\
import sys
sys.exit("skc_evil_exit was imported: the loader imported a module a file named")
'''


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path that calls sys.exit when imported."""
    (tmp_path / "skc_evil_exit.py").write_text(EVIL_SOURCE)
    package = tmp_path / "skc_evil_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(EVIL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("skc_evil_exit", "skc_evil_pkg"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return ["skc_evil_exit:Evil", "skc_evil_pkg:Evil", "skc_evil_pkg.nets:Evil"]


def test_module_that_exits_on_import_is_never_imported(dense, evil_module, tmp_path):
    # in this very process: an import would raise SystemExit here
    for where in PLACES:
        for path in evil_module:
            header, blob = unpack(dense.data)
            file = tmp_path / f"evil_{where}.skc"
            file.write_bytes(pack(_place(header, where, path), blob))
            with pytest.raises(FormatError, match="not trusted"):
                load(file)
            with pytest.raises(FormatError, match="not trusted"):
                load(file, trusted=[torch.nn.Linear])
            assert "skc_evil_exit" not in sys.modules
            assert "skc_evil_pkg" not in sys.modules


def test_module_that_exits_on_import_in_a_child(dense, evil_module):
    cases = []
    for where in PLACES:
        for path in evil_module:
            header, blob = unpack(dense.data)
            cases.append(_loads_case(pack(_place(header, where, path), blob)))

    def probe():
        return {"imported": [m for m in ("skc_evil_exit", "skc_evil_pkg")
                             if m in sys.modules]}

    for outcome in run_cases(cases, probe=probe):
        check_format_error(outcome, "not trusted")
        assert outcome.probe == {"imported": []}
