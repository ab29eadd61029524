#!/bin/sh
# Fetch the prebuilt OHIF v3 viewer (npm package @ohif/app) for tests/test_ohif.py.
#
#   tests/ohif/fetch.sh            # -> ${LITEVNA_OHIF_CACHE:-$HOME/.cache/litevna/ohif}/dist-<version>/
#
# The version is pinned in tests/ohif/VERSION (the test reads the same file). The tarball is
# fetched with `npm pack` only when it is not in the cache yet, and unpacked only when the dist
# directory is missing, so a second run does nothing and takes no time. Prints the dist path.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=$(tr -d ' \n\r' < "$here/VERSION")
cache=${LITEVNA_OHIF_CACHE:-$HOME/.cache/litevna/ohif}
tgz="$cache/ohif-app-$version.tgz"
dist="$cache/dist-$version"

if [ -f "$dist/index.html" ] && [ -f "$dist/app-config.js" ]; then
    echo "$dist"
    exit 0
fi

mkdir -p "$cache"
if [ ! -s "$tgz" ]; then
    # npm writes ohif-app-<version>.tgz into the destination; download elsewhere first so an
    # interrupted fetch never leaves a truncated tarball under the final name.
    scratch=$(mktemp -d "$cache/.pack.XXXXXX")
    trap 'rm -rf "$scratch"' EXIT
    (cd "$scratch" && npm pack --silent "@ohif/app@$version" >/dev/null)
    mv "$scratch/ohif-app-$version.tgz" "$tgz"
    rm -rf "$scratch"
    trap - EXIT
fi

# Unpack into a scratch directory, then move it into place in one rename.
unpack=$(mktemp -d "$cache/.unpack.XXXXXX")
trap 'rm -rf "$unpack"' EXIT
tar -xzf "$tgz" -C "$unpack" package/dist
test -f "$unpack/package/dist/index.html"
rm -rf "$dist"
mv "$unpack/package/dist" "$dist"
rm -rf "$unpack"
trap - EXIT
echo "$dist"
