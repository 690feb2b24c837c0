#!/bin/sh
# install.sh: puts lite-apiserver on an edge node — the binary, the systemd unit and the
# configuration examples — without make. POSIX sh, so it also runs under busybox.
#
#   ./install.sh [--prefix /usr] [--destdir DIR] [--binary PATH]
#
# Existing configuration is never overwritten: a changed example is written next to it
# as *.new. Nothing is started; the next steps and the uninstall steps are printed.
set -eu

usage() {
    cat <<'EOF'
Usage: install.sh [--prefix DIR] [--destdir DIR] [--binary PATH]

  --prefix DIR    installation prefix for the binary and docs (default /usr);
                  the unit's ExecStart= is rewritten to DIR/bin/lite-apiserver
  --destdir DIR   stage everything under DIR (default $DESTDIR, else /), for packaging
  --binary PATH   the lite-apiserver executable to install (default: the static build
                  target/x86_64-unknown-linux-gnu/release/lite-apiserver, else
                  target/release/lite-apiserver, under $CARGO_TARGET_DIR or ./target)
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

SOURCE_DIR=$(cd "$(dirname "$0")" && pwd)
PREFIX=/usr
DESTDIR=${DESTDIR:-}
BINARY=

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --destdir) [ $# -ge 2 ] || die "--destdir needs a value"; DESTDIR=$2; shift 2 ;;
        --destdir=*) DESTDIR=${1#--destdir=}; shift ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a value"; BINARY=$2; shift 2 ;;
        --binary=*) BINARY=${1#--binary=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case $PREFIX in
    /*) ;;
    *) die "--prefix must be an absolute path: $PREFIX" ;;
esac
case $PREFIX in
    *'#'* | *' '*) die "--prefix must not contain '#' or spaces: $PREFIX" ;;
esac
PREFIX=${PREFIX%/}

if [ -z "$BINARY" ]; then
    target=${CARGO_TARGET_DIR:-$SOURCE_DIR/target}
    for candidate in "$target/x86_64-unknown-linux-gnu/release/lite-apiserver" "$target/release/lite-apiserver"; do
        if [ -x "$candidate" ]; then
            BINARY=$candidate
            break
        fi
    done
    [ -n "$BINARY" ] || die "no built binary under $target: run cargo build --release (see docs/DEPLOY.md) or pass --binary"
fi
[ -f "$BINARY" ] && [ -x "$BINARY" ] || die "not an executable file: $BINARY"

BIN_DIR=$PREFIX/bin
DOC_DIR=$PREFIX/share/doc/lite-apiserver
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/kubernetes/edge

STAGING=$(mktemp -d)
trap 'rm -rf "$STAGING"' EXIT INT TERM

# put MODE SOURCE TARGET: installs SOURCE as $DESTDIR/TARGET, creating its directory.
put() {
    install -d -m 0755 "$DESTDIR$(dirname "$3")"
    install -m "$1" "$2" "$DESTDIR$3"
    echo "installed $DESTDIR$3"
}

# put_config MODE SOURCE TARGET: like put, but an existing different TARGET is kept and
# SOURCE goes to TARGET.new for the administrator to compare.
put_config() {
    if [ ! -e "$DESTDIR$3" ]; then
        put "$@"
    elif cmp -s "$2" "$DESTDIR$3"; then
        echo "unchanged $DESTDIR$3"
    else
        put "$1" "$2" "$3.new"
        echo "  kept your $DESTDIR$3; compare it with $3.new"
    fi
}

sed -e "s#^ExecStart=/usr/bin/lite-apiserver#ExecStart=$BIN_DIR/lite-apiserver#" \
    -e "s#file:///usr/share/doc/lite-apiserver/#file://$DOC_DIR/#" \
    "$SOURCE_DIR/systemd/lite-apiserver.service" >"$STAGING/lite-apiserver.service"

put 0755 "$BINARY" "$BIN_DIR/lite-apiserver"
put 0644 "$STAGING/lite-apiserver.service" "$UNIT_DIR/lite-apiserver.service"
put_config 0644 "$SOURCE_DIR/conf/lite-apiserver.conf" "$CONF_DIR/lite-apiserver.conf"
put_config 0644 "$SOURCE_DIR/conf/tls.json" "$CONF_DIR/tls.json"
put 0644 "$SOURCE_DIR/conf/lite-apiserver.conf" "$DOC_DIR/examples/lite-apiserver.conf"
put 0644 "$SOURCE_DIR/conf/tls.json" "$DOC_DIR/examples/tls.json"
put 0644 "$SOURCE_DIR/conf/kubelet.kubeconfig" "$DOC_DIR/examples/kubelet.kubeconfig"
put 0644 "$SOURCE_DIR/docs/DEPLOY.md" "$DOC_DIR/DEPLOY.md"

cat <<EOF

Next steps:
  1. edit $CONF_DIR/lite-apiserver.conf (at least KUBE_APISERVER_URL) and $CONF_DIR/tls.json
  2. systemctl daemon-reload && systemctl enable --now lite-apiserver
  3. journalctl -u lite-apiserver -f
  4. point kubelet at https://127.0.0.1:51003 (example: $DOC_DIR/examples/kubelet.kubeconfig)

To uninstall:
  systemctl disable --now lite-apiserver
  rm -f $BIN_DIR/lite-apiserver $UNIT_DIR/lite-apiserver.service
  rm -rf $DOC_DIR
  systemctl daemon-reload
  # and, to drop the configuration and the cache as well:
  rm -f $CONF_DIR/lite-apiserver.conf $CONF_DIR/lite-apiserver.conf.new $CONF_DIR/tls.json.new
  rm -rf /var/lib/lite-apiserver
EOF
