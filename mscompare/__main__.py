"""Entry point for `python -m mscompare`: the thread policy's wait setting goes in before torch loads."""
import os

from mscompare.threads import AUTO_WAIT_POLICY

os.environ.setdefault("OMP_WAIT_POLICY", AUTO_WAIT_POLICY)

from mscompare.cli import main  # noqa: E402

raise SystemExit(main())
