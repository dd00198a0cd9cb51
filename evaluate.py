"""evaluate.py — not implemented yet (see README.md, "Status")."""

import sys

if __name__ == "__main__":
    sys.exit("evaluate.py: not implemented yet; see README.md (Status)")
