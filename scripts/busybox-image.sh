#!/usr/bin/env bash
# Builds a busybox image from Debian's busybox-static with `docker import`,
# for machines without a registry, under each name given (default
# km/busybox:1, the name the README's examples use). Versioned tags matter:
# their default imagePullPolicy is IfNotPresent, so pods start without a
# pull attempt. Idempotent.
set -euo pipefail

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(km/busybox:1)

missing=()
for n in "${names[@]}"; do
    docker image inspect "$n" >/dev/null 2>&1 || missing+=("$n")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if ! command -v busybox >/dev/null && [ ! -x /bin/busybox ]; then
    echo "installing busybox-static (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi
echo "building the image ${missing[*]} from busybox-static (docker import)"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
cp "$(command -v busybox || echo /bin/busybox)" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>"$root/etc/passwd"
first=${missing[0]}
tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$first" >/dev/null
for n in "${missing[@]:1}"; do
    docker tag "$first" "$n"
done
