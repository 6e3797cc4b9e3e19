"""Entry point for `python -m mscompare`."""
from mscompare.cli import main

raise SystemExit(main())
