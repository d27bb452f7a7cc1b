#!/bin/bash
# Build the Debian package from the staged tree (make deb): build-deb.sh STAGE DEB VERSION
# HUB_PYTHON SBOM COMPRESS. dpkg-deb alone, no debhelper: the tree is already laid out by
# packaging/install.py, the same code `make install` runs.
set -euo pipefail
stage=$1 deb=$2 version=$3 hub_python=$4 sbom=$5 compress=$6  # compress: dpkg-deb options
here=$(cd "$(dirname "$0")" && pwd)

# The venv holds compiled wheels for this machine's architecture and links to this exact
# interpreter (python3.11): the package says both.
arch=$(dpkg --print-architecture)
python_package=$(basename "$hub_python")

install -D -m 0644 "$sbom" "$stage/usr/share/doc/homehub/sbom.cdx.json"
rm -rf "$stage/DEBIAN"
install -d -m 0755 "$stage/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$stage/DEBIAN/$script"
done
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@PYTHON@/$python_package/" \
    -e "s/@INSTALLED_SIZE@/$installed_size/" "$here/debian/control.in" >"$stage/DEBIAN/control"
chmod 0644 "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

mkdir -p "$(dirname "$deb")"
# shellcheck disable=SC2086 # the compression options are words of their own
dpkg-deb --root-owner-group $compress --build "$stage" "$deb.partial" >/dev/null
mv "$deb.partial" "$deb"
rm -rf "$stage/DEBIAN"
echo "built $deb"
