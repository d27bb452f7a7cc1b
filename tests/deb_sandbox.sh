#!/bin/bash
# Install, upgrade, remove and purge homehub on this machine's own Debian, for real, without
# changing this machine (tests/test_packaging.py):
#   deb_sandbox.sh deb FILE.deb SCRATCH   the real dpkg and the package's maintainer scripts;
#   deb_sandbox.sh make REPO SCRATCH      `make install` / `make uninstall` into / as root (the
#                                         path that runs systemd-sysusers and systemd-tmpfiles).
# SCRATCH is an empty directory of the caller's (a test's tmp_path), the tmpfs's mount point.
#
# Run as root under `unshare --mount --propagation private`: /etc, /usr, /opt, /var (and /lib
# where it is not the merged /usr's symlink) become overlays whose writes land in a tmpfs that
# vanishes with the namespace, and /run is an empty tmpfs, so the scripts see no running
# systemd or system bus and reach none of the host's daemons. Every mount is checked before
# dpkg runs; a failure there exits 77 (the test skips: no sandbox here), never reaching dpkg.
#
# Prints "key: value" lines, one per fact the test asserts.
set -euo pipefail
mode=$1 what=$2 base=$3

sandbox() {
    [ "$(id -u)" = 0 ] || return 1
    local dirs=(etc usr opt var)
    [ -L /lib ] || dirs+=(lib)
    [ -d "$base" ] || return 1
    mount -t tmpfs tmpfs "$base" || return 1
    for d in "${dirs[@]}"; do
        mkdir -p "$base/$d.up" "$base/$d.work"
        mount -t overlay overlay \
            -o "lowerdir=/$d,upperdir=$base/$d.up,workdir=$base/$d.work" "/$d" || return 1
        mountpoint -q "/$d" || return 1
    done
    mount -t tmpfs tmpfs /run || return 1
    mountpoint -q /run || return 1
    [ ! -e /run/systemd/system ] || return 1
}
if ! sandbox 2>/dev/null; then
    echo "no sandbox: needs root, mount namespaces and overlayfs" >&2
    exit 77
fi

facts() {
    local stage=$1
    for path in /etc/homehub /etc/homehub/keys /etc/homehub/tls /etc/homehub/homehub.toml \
        /var/lib/homehub/outbox.db /opt/homehub/.venv/bin/homehub; do
        if [ -e "$path" ]; then
            echo "$stage $path: $(stat -c '%a %U %G' "$path")"
        else
            echo "$stage $path: absent"
        fi
    done
    echo "$stage user: $(getent passwd homehub | cut -d: -f1,6,7 || echo absent)"
    echo "$stage enabled: $(readlink /etc/systemd/system/multi-user.target.wants/homehub.service || echo no)"
    echo "$stage status: $(dpkg-query -W -f='${db:Status-Abbrev}${Version}' homehub 2>/dev/null || echo none)"
}

if [ "$mode" = deb ]; then
    install=(dpkg --force-depends -i "$what")
    remove=(dpkg -r homehub)
    purge=(dpkg -P homehub)
else
    install=(make -C "$what" --no-print-directory install)
    remove=(make -C "$what" --no-print-directory uninstall)
    purge=(make -C "$what" --no-print-directory uninstall PURGE=yes)
fi

"${install[@]}" >/dev/null 2>&1
facts installed
echo "installed version: $(homehub --help >/dev/null && /opt/homehub/.venv/bin/python -c \
    'import importlib.metadata as m; print(m.version("homehub"))')"
echo "installed check-config: $(homehub check-config /etc/homehub/homehub.toml)"

# The technician's edit, then the same package again: dpkg runs prerm upgrade and postinst
# configure with the old version, the upgrade path.
echo '# provisioned' >>/etc/homehub/homehub.toml
"${install[@]}" >/dev/null 2>&1
echo "upgraded config kept: $(tail -n 1 /etc/homehub/homehub.toml)"

mkdir -p /var/lib/homehub
echo 'unsent' >/var/lib/homehub/outbox.db
"${remove[@]}" >/dev/null 2>&1
facts removed
"${purge[@]}" >/dev/null 2>&1
facts purged
