#!/bin/sh
# install-deps.sh: installs the Debian packages optd needs that are missing.
#
#   deploy/install-deps.sh GROUP...
#
# Groups: build (compile and run the daemon: make, make run), test (make
# check), bench (make bench),
# fuzz (make fuzz), fixtures (regenerate the PyTorch reference data),
# image (make image-test: debootstrap a Debian 12 root).
# Asks dpkg first, so a machine that has everything gets no apt call at all;
# otherwise runs apt-get update once and installs only what is missing.
# Needs root (or sudo) only when something must be installed.
set -eu

pkgs_build="gcc g++ make pkg-config libc6-dev libmicrohttpd-dev libjansson-dev libuv1-dev zlib1g-dev uthash-dev libgnutls28-dev libjs-chart.js"
pkgs_test="check python3 python3-yaml python3-jsonschema curl openssl clang libclang-rt-14-dev nodejs procps python3-numpy python3-sklearn python3-matplotlib nginx systemd python3-optuna chromium chromium-driver python3-selenium python3-torch python3-pip python3-venv python3-wheel"
pkgs_bench="wrk nginx python3 python3-numpy python3-torch"
pkgs_fuzz="clang libclang-rt-14-dev"
pkgs_fixtures="python3 python3-numpy python3-torch"
pkgs_image="debootstrap"

want=""
for group in "$@"; do
    case "$group" in
        build) want="$want $pkgs_build" ;;
        test) want="$want $pkgs_test" ;;
        bench) want="$want $pkgs_bench" ;;
        fuzz) want="$want $pkgs_fuzz" ;;
        fixtures) want="$want $pkgs_fixtures" ;;
        image) want="$want $pkgs_image" ;;
        *) echo "install-deps.sh: unknown group '$group' (build, test, bench, fuzz, fixtures, image)" >&2; exit 2 ;;
    esac
done

missing=""
for p in $want; do
    case " $missing " in *" $p "*) continue ;; esac
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "install-deps.sh: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-deps.sh: missing Debian packages:$missing; install them as root with: apt-get install$missing (or run this make as root)" >&2; exit 1
    fi
else
    SUDO=""
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
