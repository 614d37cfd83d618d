#!/bin/sh
# `edgewise` in the Triton image: Edgewise's libraries live apart in /opt/edgewise/lib so they
# never shadow what tritonserver's own Python (backends, stubs) imports.
PYTHONPATH=/opt/edgewise/lib${PYTHONPATH:+:$PYTHONPATH} exec python3 -m edgewise "$@"
