"""The pure core: money, periods, catalog, policy model and the admission decision.

Nothing here performs I/O or reads the clock; time is always passed in.
"""
