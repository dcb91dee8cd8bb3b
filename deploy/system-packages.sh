#!/usr/bin/env bash
# Installs the system packages of the named groups of deploy/system-packages.txt that this
# machine lacks, or says exactly what to run.
#   deploy/system-packages.sh [--list|--check] GROUP [GROUP ...]
#   --list   print the packages of the groups, one per line (the Dockerfile uses it)
#   --check  print the missing ones and exit 1 if any (installs nothing)
# With nothing missing it only asks dpkg-query once. It installs with apt-get as root or with
# passwordless sudo; otherwise it stops and names the command. Exit status: 0 all present,
# 1 something missing and not installed, 2 usage error or a package the apt sources lack.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list_file="${FACESTREAM_SYSTEM_PACKAGES:-$here/system-packages.txt}"
mode=install
case "${1:-}" in
  --list) mode=list; shift ;;
  --check) mode=check; shift ;;
esac
if [ "$#" -eq 0 ]; then
  echo "usage: $0 [--list|--check] GROUP [GROUP ...]" >&2
  exit 2
fi

packages=()
for group in "$@"; do
  found=0
  current=""
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [ -z "$line" ] && continue
    if [[ "$line" == \[*\] ]]; then
      current="${line:1:${#line}-2}"
      [ "$current" = "$group" ] && found=1
      continue
    fi
    [ "$current" = "$group" ] && packages+=("$line")
  done < "$list_file"
  if [ "$found" -eq 0 ]; then
    echo "system-packages: no group [$group] in $list_file" >&2
    exit 2
  fi
done

if [ "$mode" = list ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  # one dpkg-query for every package: "ii " marks an installed one
  declare -A installed=()
  while read -r name status; do
    [ "$status" = ii ] && installed["${name%%:*}"]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${packages[@]}" 2>/dev/null || true)
  for package in "${packages[@]}"; do
    [ -n "${installed[$package]:-}" ] || missing+=("$package")
  done
else
  missing=("${packages[@]}")
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

command_line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$mode" = check ]; then
  echo "system-packages: missing: ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: this machine has no apt-get; install the equivalents of: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "system-packages: missing ${missing[*]}; run as root:" >&2
  echo "  sudo apt-get update && sudo $command_line" >&2
  exit 1
fi

echo "system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
unknown=()
for package in "${missing[@]}"; do
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    unknown+=("$package")
  fi
done
if [ "${#unknown[@]}" -ne 0 ]; then
  echo "system-packages: not in this machine's apt sources: ${unknown[*]} (from $list_file)" >&2
  exit 2
fi
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
