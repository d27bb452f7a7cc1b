"""``python -m agent`` is the ``homehub`` command."""

from agent.cli import main

raise SystemExit(main())
