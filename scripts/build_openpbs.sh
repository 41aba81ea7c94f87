#!/usr/bin/env bash
# Build OpenPBS 23.06.06 from the vendored source and install it into /opt/pbs (run as root).
# $OPENPBS_SOURCE may point at another directory holding the same three files; their SHA-256s
# are checked against third_party/openpbs/SHA256SUMS before anything is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
sums="$PWD/third_party/openpbs/SHA256SUMS"
src="${OPENPBS_SOURCE:-$PWD/third_party/openpbs}"

if [ "$(id -u)" != 0 ]; then
    echo "build_openpbs.sh must run as root (it installs Debian packages and /opt/pbs)" >&2
    exit 1
fi
(cd "$src" && sha256sum --check --strict "$sums") || {
    echo "OpenPBS source files in $src do not match $sums; fetch them again" >&2
    exit 1
}

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    gcc g++ make libtool autoconf automake libhwloc-dev libx11-dev libxt-dev libedit-dev \
    libical-dev ncurses-dev perl postgresql-server-dev-all postgresql-contrib postgresql \
    python3-dev tcl-dev tk-dev tcl tk swig libexpat-dev expat libssl-dev libxext-dev \
    libxft-dev libcjson-dev sudo >/dev/null

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
# The archive (git archive of the tag) has no top-level directory: unpack into one of our own.
mkdir "$build/openpbs"
tar -xzf "$src/openpbs-23.06.06.tar.gz" -C "$build/openpbs"
cd "$build/openpbs"
patch -p1 --forward --batch < "$src/0001-compile-with-python-3.11.patch"
patch -p1 --forward --batch < "$src/0002-python-3.10-support.patch"
# A PATH free of user shims: configure must find Debian's own Python, which PBS links against.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
./autogen.sh >/dev/null
./configure --prefix=/opt/pbs --with-python=/usr >/dev/null
make -j"$(nproc)" >/dev/null
make install >/dev/null
# The systemd part of postinstall fails where there is no systemd; the rest is what matters.
/opt/pbs/libexec/pbs_postinstall || true
if grep -q '^PBS_START_MOM=' /etc/pbs.conf; then
    sed -i 's/^PBS_START_MOM=.*/PBS_START_MOM=1/' /etc/pbs.conf
else
    echo 'PBS_START_MOM=1' >> /etc/pbs.conf
fi
chmod 4755 /opt/pbs/sbin/pbs_iff /opt/pbs/sbin/pbs_rcp
echo "OpenPBS installed in /opt/pbs"
