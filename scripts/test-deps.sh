#!/usr/bin/env bash
# Installs what km's integration tests use, when it is missing:
# ZooKeeper (Debian) for zk:// master detection, pymesos (PyPI) as an
# independent Mesos client, kubectl (the machines have v1.32; Debian's
# kubernetes-client otherwise) as km apiserver's real client, nft and
# conntrack (Debian) for km proxy's kernel path. Idempotent; run by
# `make test`.
set -euo pipefail

if [ ! -e /usr/share/zookeeper/bin/zkServer.sh ]; then
    echo "installing zookeeper (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends zookeeper >/dev/null
fi

for tool in nft:nftables conntrack:conntrack; do
    if ! command -v "${tool%%:*}" >/dev/null; then
        echo "installing ${tool#*:} (Debian)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
    fi
done

PY=${PYTHON:-python3}
if ! "$PY" -c 'import pymesos, http_parser.http' 2>/dev/null; then
    echo "installing pymesos (PyPI)"
    "$PY" -m pip install -q --no-deps 'pymesos==0.3.15'
    "$PY" -m pip install -q six addict kazoo
    # pymesos needs http-parser, whose C extension no longer compiles on
    # Python 3.11; the package falls back to its pure-Python parser, so install
    # just its Python modules from the same PyPI release.
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$tmp" 'http-parser==0.9.0'
    tar -xzf "$tmp"/http-parser-0.9.0.tar.gz -C "$tmp"
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$site/http_parser"
    mkdir -p "$site/http_parser"
    cp "$tmp"/http-parser-0.9.0/http_parser/*.py "$site/http_parser/"
    rm -rf "$tmp"
    "$PY" -c 'import pymesos, http_parser.http'
fi

if ! command -v kubectl >/dev/null; then
    echo "installing kubectl (Debian's kubernetes-client)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
kubectl version --client >/dev/null

# The executor's and the end-to-end tests run containers, and there is no
# registry: a busybox image built from Debian's busybox-static.
"$(dirname "$0")/busybox-image.sh" km-test/busybox:latest km-test/busybox:1
