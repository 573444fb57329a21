"""What every target shares: seed its corpus, then hand over to atheris (libFuzzer)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import atheris


def run(
    test_one_input: Callable[[bytes], None],
    seeds: Iterable[bytes],
    flags: Sequence[str] = ("-max_len=4096",),
) -> None:
    """Fuzz ``test_one_input`` with libFuzzer's command line (``sys.argv``); the first
    argument that is not a file is the corpus, given every seed it does not have yet. ``flags``
    are the target's defaults, each unless the command line sets it; seeds are always
    kept in the corpus (``-keep_seed=1``: libFuzzer drops those that add no coverage
    at start, and coverage cannot see inside C extensions such as msgspec)."""
    paths = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if paths and not paths[0].is_file():  # files are inputs to run once (a crash)
        corpus = paths[0]
        corpus.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            path = corpus / f"seed-{hashlib.sha1(seed).hexdigest()}"
            if not path.exists():
                path.write_bytes(seed)
    args = list(sys.argv)
    for flag in ("-keep_seed=1", *flags):
        name = flag.partition("=")[0] + "="
        if not any(arg.startswith(name) for arg in args):
            args.append(flag)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
