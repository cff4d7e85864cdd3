"""Where the repository is, for tests at any depth of tests/."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
