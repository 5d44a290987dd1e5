"""Random mutations of header fields (and stream bytes) with the checksums
recomputed: every mutated file must load and predict, or raise FormatError,
in under 2 s and 200 MB, in a child process that survives.

The default run tries 100 mutations; ``pytest -m fuzz tests/io`` tries
4,000 more (1,000 per base file). A failure names the base file and the
case's seed: replay it with ``loads(fuzzing.mutate(bases[base].data,
seed)[0])``. Failures of bugs that have their own xfail test are counted
under ``KNOWN_BUGS`` instead.
"""


import pytest

from .fuzzing import mutate
from .helpers import acceptable, loads_case, run_cases

# Failures of bugs that have their own strict xfail test: a mutation whose
# description matches and whose outcome matches is counted, not failed, as
# ``{"test file::test name": (description regex, Outcome.summary regex)}``.
# Remove an entry when its bug is fixed (its xfail test then passes).
KNOWN_BUGS = {}


def _known(description, outcome):
    if outcome.seconds >= 2 or outcome.peak_mb >= 200:
        return None
    for test, (mutation, failure) in KNOWN_BUGS.items():
        if mutation.search(description) and failure.search(outcome.summary):
            return test
    return None


BASES = ["dense", "pruned_kmeans", "uniform", "big_sparse"]


def _fuzz(bases, X_small, base, seeds):
    data = bases[base].data
    cases, descriptions = [], []
    for seed in seeds:
        mutated, description = mutate(data, seed)
        cases.append(loads_case(mutated, X_small))
        descriptions.append(description)
    failures = []
    kinds = {}
    for seed, description, outcome in zip(seeds, descriptions, run_cases(cases)):
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
        if not acceptable(outcome):
            known = _known(description, outcome)
            if known:
                kinds[f"known bug ({known})"] = kinds.get(
                    f"known bug ({known})", 0) + 1
                continue
            failures.append(f"base={base} seed={seed}: {description}\n    -> "
                            f"{outcome.summary}")
    assert not failures, (f"{len(failures)} of {len(seeds)} mutated files "
                          f"failed ({kinds}):\n" + "\n".join(failures))
    return kinds


@pytest.mark.parametrize("base", BASES)
def test_header_mutations_fast_subset(bases, X_small, base):
    first = 1000 * (1 + BASES.index(base))
    _fuzz(bases, X_small, base, list(range(first, first + 25)))


@pytest.mark.fuzz
@pytest.mark.parametrize("base", BASES)
def test_header_mutations_heavy(bases, X_small, base):
    first = 100_000 * (1 + BASES.index(base))
    kinds = _fuzz(bases, X_small, base, list(range(first, first + 1000)))
    # the mutations reach past the container: some files load, most do not
    assert kinds.get("format_error", 0) > 500 and kinds.get("loaded", 0) > 50, kinds
