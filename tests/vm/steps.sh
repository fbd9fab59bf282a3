#!/bin/sh
# Runs inside the vivid VM (see tests/vm/vivid.sh); /data holds veriframe and the configs.
# $1: frames for the allow_virtual run. Marker lines separate the steps for check_vivid.py.
N=${1:-40}
cd /data
echo "=== STEP probe"
./veriframe probe
./veriframe probe --json
echo "=== STEP defaults"
./veriframe run --config defaults.toml --frames 20 --log-format json
echo "=== EXIT $?"
echo "=== STEP verify-defaults"
./veriframe verify /tmp/vf-default --json
echo "=== EXIT $?"
echo "=== STEP allow_virtual"
./veriframe run --config vivid.toml --frames "$N" --log-format json
echo "=== EXIT $?"
echo "=== STEP verify-allow"
./veriframe verify /tmp/vf --json
echo "=== EXIT $?"
echo "=== STEP end"
