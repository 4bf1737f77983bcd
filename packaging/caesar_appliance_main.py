"""The bundle's entry point: the caesar-appliance command."""

import sys

from appliance.cli import main

if __name__ == "__main__":
    sys.exit(main())
