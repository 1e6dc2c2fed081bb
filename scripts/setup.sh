#!/usr/bin/env bash
# Installs what building and testing histograd needs on a fresh Debian machine: a C++20
# compiler, CMake, Eigen 3.4 and doctest, and for the whole-slide-image component OpenSlide,
# HDF5 and libtiff (the tests write their own pyramidal TIFFs). Packages present are left alone.
set -euo pipefail
needed=()
for pkg in g++ cmake make pkg-config libeigen3-dev doctest-dev libopenslide-dev libhdf5-dev libtiff-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || needed+=("$pkg")
done
if ((${#needed[@]})); then
  echo "setup: installing ${needed[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${needed[@]}" >/dev/null
fi
