"""Every Python block of README.md runs as written.

The blocks run in order, in one namespace (a later block may use the ``X``,
``y`` and nets of an earlier one, as a reader would), in a temporary folder,
in a smaller form: ``load_digits_images`` gives 300 images and
``make_digits_net`` trains for 2 epochs. What a block does is otherwise
unchanged, except for these (each replaced text must still be in the README,
so that the test follows it):

- the slow blocks (the README says which take minutes) run smaller grids and
  2 folds (``SMALLER``): the reducer comparison one k, the grid searches one
  candidate each;
- the dask PCA block runs on 100 000 rows instead of 10 000 000 (4 GB);
- the dask cluster block (``Client("scheduler:8786")``) is skipped: it needs
  a running scheduler; ``tests/test_distributed.py`` runs the same search on
  a local cluster;
- the file-format block names placeholders, ``MyNet`` (your own module
  class) and ``mine.skc`` (a file of such a net): the test defines them.
"""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)

SKIPPED = {
    'Client("scheduler:8786")': "needs a running dask scheduler",
}
SMALLER = {
    "compare_reducers(X, y, n_components=(2, 10, 20))": [
        ("n_components=(2, 10, 20)", "n_components=(2,), cv=2"),
    ],
    '{"sparsity": [0.5, 0.8, 0.9]}, cv=3': [
        ('{"sparsity": [0.5, 0.8, 0.9]}, cv=3', '{"sparsity": [0.9]}, cv=2'),
    ],
    "Distiller(make_digits_net(": [
        ('[{"alpha": [0.0]}, {"alpha": [0.5, 0.9], "temperature": [4.0, 8.0]}], '
         "cv=3", '[{"alpha": [0.9], "temperature": [4.0]}], cv=2'),
    ],
    "smallest_within(tolerance=0.005)": [
        ('{"bits": [2, 4, 8], "estimator__sparsity": [0.5, 0.8, 0.9]}',
         '{"bits": [4], "estimator__sparsity": [0.9]}'),
        ("cv=3,", "cv=2,"),
    ],
    "10_000_000": [("10_000_000", "100_000"), ("500_000", "50_000")],
}
PRELUDES = {
    "trusted=[MyNet]": (
        "from skcompress import save\n"
        "from skcompress.datasets import load_digits_images\n"
        "from skcompress.models import DigitsCNN as MyNet\n"
        "from skcompress.models import make_digits_net\n"
        "save(make_digits_net(random_state=0).fit(*load_digits_images()), "
        "'mine.skc')\n"
    ),
}
# what the blocks say they write into the current folder
WRITTEN = {"net.skc", "digits.skc", "cache", "tradeoff.png", "mine.skc"}
N_SAMPLES, EPOCHS = 300, 2


def _find(table, block):
    return next((value for key, value in table.items() if key in block), None)


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    import torch

    import skcompress.datasets
    import skcompress.models

    load = skcompress.datasets.load_digits_images
    make = skcompress.models.make_digits_net

    def small_digits(*args, **kwargs):
        X, y = load(*args, **kwargs)
        return X[:N_SAMPLES], y[:N_SAMPLES]

    def short_net(*args, **kwargs):
        return make(*args, **{**kwargs, "max_epochs": EPOCHS})

    folder = tmp_path_factory.mktemp("readme")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(skcompress.datasets, "load_digits_images", small_digits)
        patch.setattr(skcompress.models, "make_digits_net", short_net)
        patch.chdir(folder)
        yield {"__name__": "readme"}, folder
    torch.set_num_threads(threads)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 8
    assert "X, y = load_digits_images()" in BLOCKS[0]
    # every substitution still finds its block
    for table in (SKIPPED, SMALLER):
        for key in table:
            assert any(key in block for block in BLOCKS), key


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs_as_written(index, namespace):
    scope, _ = namespace
    block = BLOCKS[index]
    reason = _find(SKIPPED, block)
    if reason:
        pytest.skip(f"README block {index}: {reason}")
    for old, new in _find(SMALLER, block) or []:
        assert old in block, f"README block {index} no longer has {old!r}"
        block = block.replace(old, new)
    code = (_find(PRELUDES, block) or "") + block
    exec(compile(code, f"README.md block {index}", "exec"), scope)


def test_blocks_write_only_what_they_say(namespace):
    _, folder = namespace
    assert set(os.listdir(folder)) <= WRITTEN
