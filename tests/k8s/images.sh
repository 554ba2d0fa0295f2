#!/usr/bin/env bash
# Builds the two images from docker/*.Dockerfile without a registry and writes them
# as OCI archives (for shared/k8s/load-image.sh, or `skopeo copy` to a registry):
#
#   tests/k8s/images.sh OUT-DIR        -> OUT-DIR/streammachine.tar, OUT-DIR/streammachine-operator.tar
#
# The binaries are the host's `cargo build --release` (the Dockerfiles' `prebuilt`
# stage); the base is a Debian 12 minbase root file system made once with
# debootstrap from Debian's archive and kept in buildah's store
# (localhost/streammachine-base:bookworm). Same sources, same archives: layers are
# written with --timestamp 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: images.sh OUT-DIR}
mkdir -p "$out"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "images.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# vfs works everywhere (no overlay mounts inside a container or a CI sandbox).
export STORAGE_DRIVER=vfs
bh() { $sudo env STORAGE_DRIVER=vfs buildah "$@"; }

base=localhost/streammachine-base:bookworm
if ! bh inspect --type image "$base" >/dev/null 2>&1; then
  echo "images.sh: making $base with debootstrap (once per machine)" >&2
  tmp=$(mktemp -d)
  trap '$sudo rm -rf "$tmp"' EXIT
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  $sudo debootstrap --variant=minbase bookworm "$tmp/root" "${mirror:-http://deb.debian.org/debian}" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
  $sudo rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"* \
    "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/share/locale"
  $sudo tar -C "$tmp/root" -cf "$tmp/base.tar" .
  c=$(bh from scratch)
  bh add "$c" "$tmp/base.tar" / >/dev/null
  bh commit -q --timestamp 0 "$c" "$base" >/dev/null
  bh rm "$c" >/dev/null
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for name in streammachine streammachine-operator; do
  # The Dockerfiles take target/release/* from the context: bring a binary
  # built elsewhere (CARGO_TARGET_DIR) there.
  built=${CARGO_TARGET_DIR:-target}/release/$name
  [ -x "$built" ] || { echo "images.sh: $built missing: cargo build --release first" >&2; exit 1; }
  if [ "$(realpath "$built")" != "$(realpath -m "target/release/$name")" ]; then
    mkdir -p target/release && cp -f "$built" "target/release/$name"
  fi
  file=docker/$name.Dockerfile
  [ "$name" = streammachine-operator ] && file=docker/operator.Dockerfile
  bh bud -q --timestamp 0 --isolation chroot --pull=never \
    --build-arg BASE="$base" --build-arg BINARIES=prebuilt \
    -f "$file" -t "localhost/$name:$version" . >/dev/null
  rm -f "$out/$name.tar"
  bh push -q "localhost/$name:$version" "oci-archive:$out/$name.tar:localhost/$name:$version"
  echo "images.sh: $out/$name.tar ($(du -h "$out/$name.tar" | cut -f1))" >&2
done
