"""Deep Compression on the digits CNN: prune, then quantize, then save.

Han et al.'s chain as two nested compressors: ``Quantizer(Pruner(net))``
keeps 10% of the weights (three pruning rounds with fine-tuning), then shares
the survivors through a 4-bit k-means codebook, fine-tuning again with both
constraints kept exact. :func:`skcompress.save` writes the compact file; its
size is exactly ``size_bytes_``, the denominator of ``compression_ratio_``.
Writes ``digits_pruned_4bit.skc`` in the current folder.

Run: ``python examples/deep_compression.py`` (about 30 s on 2 CPU cores).
``SKCOMPRESS_EXAMPLE_QUICK=1`` (set by the smoke test) trains a smaller base
net for fewer epochs.
"""

import os

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from skcompress import Pruner, Quantizer, load, save
from skcompress.datasets import load_digits_images
from skcompress.models import make_digits_net

QUICK = os.environ.get("SKCOMPRESS_EXAMPLE_QUICK") == "1"
torch.set_num_threads(1)  # small nets: one thread is fastest

X, y = load_digits_images()
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y,
                                      random_state=0)
net = make_digits_net(random_state=0, max_epochs=5 if QUICK else 30)

# Settings tuned in benchmarks/bench_compress.py and bench_quantize.py.
pruner = Pruner(net, sparsity=0.9, n_steps=3, finetune_epochs=1 if QUICK else 3,
                finetune_lr=5e-4, random_state=0)
# keep_base=True: the chain keeps the trained base net (compared below);
# by default only the inner compressor's result and its architecture are kept
chain = Quantizer(pruner, bits=4, finetune_epochs=1, finetune_lr=5e-4,
                  keep_base=True, random_state=0)
# One fit does it all: train the net, prune it, then quantize the pruned net.
chain.fit(Xtr, ytr)
base = chain.base_estimator_.base_estimator_  # the trained, uncompressed net
weights = [chain.estimator_.module_.get_submodule(name).weight
           for name in ("conv1", "conv2", "fc1")]  # global pruning: all but fc2
sparsity = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)

path = "digits_pruned_4bit.skc"
n_bytes = save(chain, path)
file_bytes = os.path.getsize(path)
print(f"base net   : accuracy {base.score(Xte, yte):.4f}, "
      f"{chain.original_size_bytes_} bytes as fp32")
print(f"pruned+4bit: {sparsity:.0%} of conv1/conv2/fc1 weights are zero")
print(f"pruned+4bit: accuracy {chain.score(Xte, yte):.4f}, "
      f"{file_bytes} bytes on disk ({chain.compression_ratio_:.1f}x smaller)")
# Honest sizes: the ratio is computed from the very file written above.
assert file_bytes == n_bytes == chain.size_bytes_
assert np.isclose(chain.original_size_bytes_ / file_bytes, chain.compression_ratio_)

loaded = load(path)
assert (loaded.predict(Xte) == chain.predict(Xte)).all()
print(f"wrote {path}; skcompress.load(...) predicts the same labels")
