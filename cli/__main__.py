"""Allow ``python -m stackgan2.cli`` (used by torchrun)."""

from stackgan2.cli.main import main

main()
