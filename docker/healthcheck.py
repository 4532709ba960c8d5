"""The image's HEALTHCHECK: healthy once the app answers HTTP on its port (a login page or a 401 counts)."""

import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.1:7860/", timeout=4).close()
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code < 500 else 1)
except OSError:
    sys.exit(1)
