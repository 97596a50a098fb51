#!/usr/bin/env bash
# Builds the Debian package swrouter_<version>_amd64.deb from the release binaries that
# `cargo build --release --workspace --bins` made (nothing is rebuilt), and checks it: its
# contents and control data, the systemd unit (systemd-analyze verify and an offline security
# score), an install into a scratch root with dpkg, and the packaged binaries running.
# scripts/test.sh calls it; run alone after a release build. Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
rel=$target/release
fail() { echo "package: $*" >&2; exit 1; }

for b in swrouter swcache docgen; do
  [ -x "$rel/$b" ] || fail "$rel/$b is missing; run cargo build --release --workspace --bins first"
done
for tool in dpkg-deb dpkg dpkg-shlibdeps strip man; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/setup-debian.sh installs it)"
done
# The unit must be checked, never skipped: a machine without systemd-analyze fails here.
command -v systemd-analyze >/dev/null ||
  fail "systemd-analyze is missing, so the unit cannot be verified (apt-get install systemd)"
if ! command -v cargo-deb >/dev/null; then
  echo "package: installing cargo-deb (once per machine)"
  cargo install cargo-deb --locked --version '^3'
fi

# Man pages and completions from the clap definitions (docgen), then the package.
docs=$rel/pkg-docs
rm -rf "$docs"
"$rel/docgen" "$docs"
gzip -9n "$docs"/man/*.1
out=$target/debian
rm -f "$out"/swrouter_*.deb
# --strip: the release profile keeps debug info for profiling; the package does not need it.
cargo deb -p swrouter --no-build --strip --fast --output "$out/" >/dev/null
deb=$(ls "$out"/swrouter_*_amd64.deb)
version=$(dpkg-deb -f "$deb" Version)
[ "$(basename "$deb")" = "swrouter_${version}_amd64.deb" ] || fail "unexpected file name $deb"

# Control data: name, architecture, dependencies, the conffile.
info=$(dpkg-deb -I "$deb")
for want in "Package: swrouter" "Architecture: amd64" "Depends: libc6" "Section: net"; do
  grep -q "^ $want" <<<"$info" || fail "dpkg-deb -I lacks '$want':"$'\n'"$info"
done
ctl=$(mktemp -d)
scratch=$(mktemp -d)
trap 'rm -rf "$ctl" "$scratch"' EXIT
dpkg-deb -e "$deb" "$ctl"
[ "$(cat "$ctl/conffiles")" = "/etc/swrouter/router.conf" ] ||
  fail "conffiles is not just /etc/swrouter/router.conf: $(cat "$ctl/conffiles")"

# Contents: every file a user needs, nothing from the build tree.
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for want in ./usr/bin/swrouter ./usr/bin/swcache \
  ./usr/lib/systemd/system/swrouter.service ./etc/swrouter/router.conf \
  ./usr/share/man/man1/swrouter.1.gz ./usr/share/man/man1/swrouter-status.1.gz \
  ./usr/share/man/man1/swcache.1.gz \
  ./usr/share/bash-completion/completions/swrouter ./usr/share/bash-completion/completions/swcache \
  ./usr/share/zsh/vendor-completions/_swrouter ./usr/share/fish/vendor_completions.d/swcache.fish \
  ./usr/share/doc/swrouter/copyright ./usr/share/doc/swrouter/README.md \
  ./usr/share/doc/swrouter/README.conf.md ./usr/share/doc/swrouter/examples/router.conf; do
  grep -qxF "$want" <<<"$contents" || fail "the package lacks $want; it has:"$'\n'"$contents"
done
if grep -E 'docgen|/target/|\.rs$' <<<"$contents"; then fail "build files in the package"; fi

# Install into a scratch root with dpkg itself (its own database; maintainer scripts run with
# DPKG_ROOT pointing there, so the host's systemd is not touched).
mkdir -p "$scratch/var/lib/dpkg/info" "$scratch/var/lib/dpkg/updates"
touch "$scratch/var/lib/dpkg/status" "$scratch/var/lib/dpkg/available"
dpkg --root="$scratch" --force-script-chrootless --force-depends -i "$deb" >/dev/null 2>&1 ||
  fail "dpkg --root $scratch -i failed: $(dpkg --root="$scratch" --force-script-chrootless --force-depends -i "$deb" 2>&1)"
[ "$(dpkg-query --root="$scratch" -W -f='${Status}' swrouter)" = "install ok installed" ] ||
  fail "swrouter is not installed in the scratch root"
for b in swrouter swcache; do
  v=$("$scratch/usr/bin/$b" --version) || fail "the packaged $b --version failed"
  [ "$v" = "$b ${version%-*}" ] || fail "the packaged $b --version says '$v'"
  "$scratch/usr/bin/$b" --help | head -1 | grep -q "^$b: " || fail "the packaged $b --help does not begin with its name"
done
"$scratch/usr/bin/swrouter" check -c "$scratch/etc/swrouter/router.conf" >/dev/null ||
  fail "the packaged /etc/swrouter/router.conf does not pass swrouter check"
for page in "$scratch"/usr/share/man/man1/*.1.gz; do
  w=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man $page failed: $w"
  [ -z "$w" ] || fail "man $page warns: $w"
done

# The unit: systemd-analyze verify against the installed files (the unit's /usr/bin paths
# pointed into the scratch root, man pages found there). It exits 0 on warnings such as an
# unknown key, so any output is a failure.
unit=$scratch/usr/lib/systemd/system/swrouter.service
mkdir -p "$scratch/verify"
sed "s#/usr/bin/swrouter#$scratch/usr/bin/swrouter#g" "$unit" >"$scratch/verify/swrouter.service"
v=$(cd "$scratch/verify" && MANPATH=$scratch/usr/share/man systemd-analyze verify swrouter.service 2>&1) ||
  fail "systemd-analyze verify failed: $v"
[ -z "$v" ] || fail "systemd-analyze verify complains: $v"
grep -qx "Type=notify" "$unit" && grep -qx "ExecReload=/bin/kill -HUP \$MAINPID" "$unit" &&
  grep -qx "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW" "$unit" ||
  fail "the unit lost Type=notify, the SIGHUP reload or its capability set"
# Exposure on systemd's 0-100 scale (2.9 "OK" is shown as 29): a hardening line lost fails.
systemd-analyze security --offline=yes --threshold=35 "$scratch/verify/swrouter.service" >/dev/null 2>&1 ||
  fail "the unit's exposure rose above 3.5: $(systemd-analyze security --offline=yes "$scratch/verify/swrouter.service" 2>&1 | tail -1)"

# Removal and purge leave nothing behind, the conffile included.
dpkg --root="$scratch" --force-script-chrootless --purge swrouter >/dev/null 2>&1 ||
  fail "dpkg --purge failed in the scratch root"
[ ! -e "$scratch/usr/bin/swrouter" ] && [ ! -e "$scratch/etc/swrouter/router.conf" ] ||
  fail "purge left files behind"
echo "package: $deb checked (contents, control, unit, install, --version, purge)"
echo "$deb"
