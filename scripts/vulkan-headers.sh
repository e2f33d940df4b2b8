#!/usr/bin/env bash
# Vulkan headers new enough for llama.cpp's Vulkan backend, in a private prefix.
#
# Debian 12's headers (1.3.239) lack VK_EXT_layer_settings (vk::LayerSettingEXT),
# which ggml-vulkan.cpp uses. Debian 13's libvulkan-dev (1.4.x) has them. This
# downloads that one package with a private apt configuration (its own source
# entry, derived from the system's, and its own lists and cache in a temporary
# directory), and unpacks its headers into PREFIX. Nothing on the system is
# installed, upgraded or edited, and it needs no root. Later runs find the
# headers and do nothing.
#
# Usage: scripts/vulkan-headers.sh PREFIX   (then VULKAN_SDK=PREFIX/usr)
set -euo pipefail
prefix=${1:?usage: vulkan-headers.sh PREFIX}
structs=$prefix/usr/include/vulkan/vulkan_structs.hpp
if grep -q LayerSettingEXT "$structs" 2>/dev/null; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt's download sandbox user must reach it

# Debian 13's suite on the system's own Debian mirror, signed by its own key.
base=/etc/apt/sources.list.d/debian.sources
uri=$(sed -n 's|^URIs: *\(.*/debian\)/*$|\1|p' "$base" 2>/dev/null | head -n 1)
key=$(sed -n 's/^Signed-By: *//p' "$base" 2>/dev/null | head -n 1)
mkdir -p "$work/sources" "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
    "${uri:-http://deb.debian.org/debian}" "${key:-/usr/share/keyrings/debian-archive-keyring.gpg}" \
    >"$work/sources/trixie.sources"
apt=(-qq -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/sources"
     -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
     -o "Dir::State::Status=/var/lib/dpkg/status" -o Debug::NoLocking=1)
apt-get "${apt[@]}" update >/dev/null
version=$(apt-cache "${apt[@]}" madison libvulkan-dev | awk '$3 ~ /^1\.4/ {print $3; exit}')
[ -n "$version" ] || { echo "vulkan-headers: no libvulkan-dev 1.4 in Debian 13's lists" >&2; exit 1; }
chmod 777 "$work/deb"
(cd "$work/deb" && apt-get "${apt[@]}" download "libvulkan-dev=$version" >/dev/null 2>&1)
dpkg-deb -x "$work"/deb/libvulkan-dev_*.deb "$work/root"
grep -q LayerSettingEXT "$work/root/usr/include/vulkan/vulkan_structs.hpp" ||
    { echo "vulkan-headers: libvulkan-dev $version lacks vk::LayerSettingEXT" >&2; exit 1; }
# Headers only: the package's libvulkan.so link would dangle (the loader is the system's).
mkdir -p "$prefix/usr"
rm -rf "$prefix/usr/include"
mv "$work/root/usr/include" "$prefix/usr/include"
echo "$version" >"$prefix/VERSION"
