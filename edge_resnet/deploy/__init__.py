"""Deployment jobs: the bundle on the workstation (``bundle``), the engine and its check on the device (``device``).

Like ``edge_resnet.pipeline`` these sit above the stages they string together, and no stage imports
them. Importing this package imports neither half.
"""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_SAMPLES": "bundle",
    "BundleResult": "bundle",
    "make_bundle": "bundle",
    "REPORT": "device",
    "DeviceCheck": "device",
    "build_and_check": "device",
    "check_model": "device",
    "open_bundle": "device",
    "verify_engine": "device",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
