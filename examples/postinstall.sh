#!/bin/sh
# Runs on the device after every image is installed and before the boot
# environment switches slots.  A non-zero exit aborts the update.
echo "pyvorin example: post-install step ran"
