"""The API image's HEALTHCHECK: GET /healthz on the port the settings give `pdistill serve`.

Exit 0 when it answers 200, 1 otherwise (Docker's healthy / unhealthy).
"""

from __future__ import annotations

import sys
import urllib.request

from orchestrator.settings import Settings


def main() -> int:
    port = Settings().api_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except OSError:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        return 1


if __name__ == "__main__":
    sys.exit(main())
