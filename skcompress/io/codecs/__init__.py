"""Codecs of the file format, one per file (docs/format.md, "Codecs").

- :mod:`.bits`: byte-aligned bit packing of small symbols;
- :mod:`.ans`: order-0 entropy coding of symbols (constriction's ANS coder
  with a frequency table fitted to the stream);
- :mod:`.positions`: positions of nonzeros, line by line, as gaps entropy
  coded with a geometric model of each line's density;
- :mod:`.zstd`: zstandard frames with a bounded decoded size.

Every decoder takes the number of symbols (or bytes) it must produce, checks
it against what the stream can hold, and runs in time linear in it.
"""
