#!/usr/bin/env bash
# Installs what km's integration tests use, when it is missing:
# ZooKeeper (Debian) for zk:// master detection, pymesos (PyPI) as an
# independent Mesos client, kubectl (the machines have v1.32; Debian's
# kubernetes-client otherwise) as km apiserver's real client. Idempotent;
# run by `make test`.
set -euo pipefail

if [ ! -e /usr/share/zookeeper/bin/zkServer.sh ]; then
    echo "installing zookeeper (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends zookeeper >/dev/null
fi

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

# The executor's tests run containers, and there is no registry: build a
# busybox image from Debian's busybox-static.
if ! command -v busybox >/dev/null && [ ! -x /bin/busybox ]; then
    echo "installing busybox-static (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi
if ! docker image inspect km-test/busybox:latest >/dev/null 2>&1; then
    echo "building the km-test/busybox image (docker import)"
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
    cp "$(command -v busybox || echo /bin/busybox)" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>"$root/etc/passwd"
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - km-test/busybox:latest >/dev/null
    rm -rf "$root"
fi
# A versioned tag too: its default imagePullPolicy is IfNotPresent, so pods
# using it start without a pull attempt (there is no registry to ask).
docker image inspect km-test/busybox:1 >/dev/null 2>&1 || docker tag km-test/busybox:latest km-test/busybox:1
