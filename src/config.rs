//! `/etc/gpurun/config.toml` (or `$GPURUN_CONFIG`).
