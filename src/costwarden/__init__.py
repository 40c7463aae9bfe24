"""costwarden: an LLM gateway that attributes, prices, budgets and records every call."""

__version__ = "0.1.0"
