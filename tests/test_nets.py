import pytest

from skcompress import Pruner, save
from skcompress._nets import find_net
from skcompress.models import make_digits_net


def test_unfitted_compressor_is_told_to_fit_first(tmp_path):
    message = r"This Pruner is not fitted.*Call Pruner\.fit\(X, y\) first"
    with pytest.raises(TypeError, match=message):
        find_net(Pruner(make_digits_net()))
    with pytest.raises(TypeError, match=message):
        save(Pruner(make_digits_net()), tmp_path / "pruner.skc")
    assert not (tmp_path / "pruner.skc").exists()


def test_other_objects_are_named():
    with pytest.raises(TypeError, match="must be a fitted compressor or skorch "
                                        "net, got str"):
        find_net("net.skc")
