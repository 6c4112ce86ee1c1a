"""Click commands, one module per area; loaded lazily by ``edgekit.cli``."""
