"""The chart tests' checks of rendered manifests and API answers (e2e/chart/static, real-node).
They read YAML: run them with Debian's /usr/bin/python3 (python3-yaml), as chart/lib.sh does."""
