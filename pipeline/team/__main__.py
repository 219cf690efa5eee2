"""``python -m pipeline.team up|down|status``."""

from pipeline.team.stack import main

main()
