//! The control plane's config files: `control.toml` and `admin.toml` (being written).
