"""The compact on-disk format for fitted skorch nets and compressors.

:func:`save` writes one file holding everything needed to rebuild a fitted
skorch net whose module may carry constraints (masks, codebooks, quantizers,
binarizers) or structural changes (low-rank factors, pruned channels, custom
blocks); :func:`load` rebuilds it without unpickling or importing anything.
The specification, limits and threat model are in docs/format.md.

One job per module:

- :mod:`.container`: prefix, header and blob, checksums, safe file reading;
- :mod:`.tree`: the module tree (constructor kwargs and differences);
- :mod:`.net`: the skorch header;
- :mod:`.registry`: the trusted classes;
- :mod:`.tensors`: per-tensor encodings, chosen from the constraints;
- :mod:`.codecs`: bit packing, ANS, sparse positions, zstd;
- :mod:`.parametrize`: baking constraints, collecting their hints;
- :mod:`.writer` / :mod:`.reader`: one encoding per net / checked decoding.
"""

from .._nets import find_net
from .container import FORMAT_VERSION
from .errors import FormatError
from .parametrize import bake, collect_hints, give_own_class
from .reader import load, loads
from .tensors import decode_tensor, encode_tensor
from .writer import (
    EncodedNet,
    dumps,
    encode_net,
    encode_tensors,
    encoded,
    save,
    tensor_storage_report,
)

__all__ = [
    "FORMAT_VERSION",
    "EncodedNet",
    "FormatError",
    "bake",
    "collect_hints",
    "decode_tensor",
    "dumps",
    "encode_net",
    "encode_tensor",
    "encode_tensors",
    "encoded",
    "find_net",
    "give_own_class",
    "load",
    "loads",
    "save",
    "tensor_storage_report",
]
