"""caesar-appliance: find and catalogue sources in radio-astronomy FITS images, in one process."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("caesar-appliance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
