"""The FUSE adapter: pyfuse3 handlers over `mountfs.vfs`, attribute conversion, errnos."""
